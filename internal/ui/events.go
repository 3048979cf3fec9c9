package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// keepAliveInterval spaces the comments that keep an idle event stream (and the proxies on its
// way) open; each also re-checks that the session is still signed in.
const keepAliveInterval = 15 * time.Second

// change names an object that changed. Pages decide from the kind whether to refresh.
type change struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// resource is what a person must be allowed to list to hear about a change.
func (c change) resource() string {
	switch c.Kind {
	case "Release":
		return "releases"
	case "Approval":
		return "approvals"
	case "Build":
		return "builds"
	case "Project":
		return "projects"
	case "Freeze":
		return "freezes"
	}
	return ""
}

// eventHub turns the manager's watches into notifications for open pages.
type eventHub struct {
	log logr.Logger

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

// subscriber is one open event stream. Changes collect in pending until the stream writes them, so
// a burst never blocks the watch and nothing is lost: the set holds each object once.
type subscriber struct {
	session string
	notify  chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	pending map[change]struct{}
}

func newEventHub(log logr.Logger) *eventHub {
	return &eventHub{log: log, subs: map[*subscriber]struct{}{}}
}

// watch subscribes to the cache's informers of every kind the pages show.
func (h *eventHub) watch(ctx context.Context, c cache.Cache) error {
	kinds := map[string]client.Object{
		"Release": &ferryv1.Release{}, "Approval": &ferryv1.Approval{}, "Build": &ferryv1.Build{},
		"Project": &ferryv1.Project{}, "Environment": &ferryv1.Environment{}, "Freeze": &ferryv1.Freeze{},
	}
	for kind, obj := range kinds {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("failed to watch %ss for the UI: %w", kind, err)
		}
		publish := func(o any) {
			if tomb, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = tomb.Obj
			}
			if obj, ok := o.(client.Object); ok {
				h.publish(change{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName()})
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    publish,
			UpdateFunc: func(_, o any) { publish(o) },
			DeleteFunc: publish,
		}); err != nil {
			return err
		}
	}
	return nil
}

func (h *eventHub) publish(c change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.mu.Lock()
		s.pending[c] = struct{}{}
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

func (h *eventHub) subscribe(session string) *subscriber {
	s := &subscriber{session: session, notify: make(chan struct{}, 1), done: make(chan struct{}), pending: map[change]struct{}{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.done)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

func (h *eventHub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.done)
	}
}

// disconnect ends the streams of a session that signed out.
func (h *eventHub) disconnect(session string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.session == session {
			delete(h.subs, s)
			close(s.done)
		}
	}
}

// close ends every stream, at shutdown.
func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.done)
	}
}

func (s *subscriber) take() []change {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]change, 0, len(s.pending))
	for c := range s.pending {
		out = append(out, c)
	}
	clear(s.pending)
	return out
}

// eventStream is GET /events: server-sent events naming each object that changed and that the
// person may see. The stream ends when the session does.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	rc := http.NewResponseController(w)
	// An event stream stays open: no write deadline.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	sub := s.events.subscribe(sess.ID)
	defer s.events.unsubscribe(sub)

	write := func(format string, args ...any) bool {
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 3000\n: connected\n\n") {
		return
	}
	ticker := time.NewTicker(keepAliveInterval)
	defer ticker.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.done:
			write("event: signedout\ndata: {}\n\n")
			return
		case <-ticker.C:
			if s.sessions.Valid(ctx, sess) != nil {
				write("event: signedout\ndata: {}\n\n")
				return
			}
			if !write(": keep-alive\n\n") {
				return
			}
		case <-sub.notify:
			if s.sessions.Valid(ctx, sess) != nil {
				write("event: signedout\ndata: {}\n\n")
				return
			}
			for _, c := range sub.take() {
				if res := c.resource(); res != "" && !s.access.canList(ctx, sess.Identity, res, c.Namespace) {
					continue
				}
				data, _ := json.Marshal(c)
				if !write("event: change\ndata: %s\n\n", data) {
					return
				}
			}
		}
	}
}

package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/ui/auth"
)

func namespacedName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// decide is POST /releases/{namespace}/{name}/decide: it records the signed-in person's decision.
// RBAC must let the person create Approvals in the namespace (asked of the API server); then the
// UI creates the Approval with its own identity and names the person on it
// (ferryv1.AssertedIdentityAnnotation). Ferry's Approval webhook believes that name from the UI
// alone, asks RBAC again and decides whether the decision stands as the person's; a refusal is
// shown as the API server worded it.
func (s *Server) decide(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	if err := s.sessions.CheckCSRF(r, sess); err != nil {
		s.log.Info("Refused a decision without a valid CSRF token", "user", sess.User)
		s.renderError(w, r, sess, http.StatusForbidden, "Refused", err.Error())
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	env := r.PostFormValue("environment")
	comment := strings.TrimSpace(r.PostFormValue("comment"))
	batch, err := strconv.ParseInt(cmpOr(r.PostFormValue("batch"), "0"), 10, 32)
	decision := ferryv1.Decision(r.PostFormValue("decision"))
	if err != nil || env == "" || (decision != ferryv1.DecisionApprove && decision != ferryv1.DecisionReject) {
		s.renderError(w, r, sess, http.StatusBadRequest, "Not a decision", "The form must name an environment, a batch number and Approve or Reject.")
		return
	}
	from := r.PostFormValue("from")
	a := &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: approvalPrefix(name, env, int32(batch))},
		Spec:       ferryv1.ApprovalSpec{Release: name, Environment: env, Decision: decision, Comment: comment, Batch: int32(batch)},
	}
	if err := s.createFor(r.Context(), sess, a); err != nil {
		status, message := apiRefusal(err)
		s.log.Info("Decision refused", "user", sess.User, "release", klogRef(ns, name), "environment", env, "batch", batch, "reason", message)
		fe := &formError{key: fmt.Sprintf("%s/%s/%s/%d", ns, name, env, batch), message: message, comment: comment}
		if from == "waiting" {
			s.showWaiting(w, r, sess, status, fe)
			return
		}
		s.showRelease(w, r, sess, status, fe)
		return
	}
	s.log.Info("Decision recorded", "user", sess.User, "approval", klogRef(ns, a.Name), "decision", decision)
	what := "approved"
	if decision == ferryv1.DecisionReject {
		what = "rejected"
	}
	where := env
	if batch > 0 {
		where = fmt.Sprintf("batch %d of %s", batch, env)
	}
	s.setFlash(w, r, fmt.Sprintf("You %s %s for Release %s (Approval %s).", what, where, name, a.Name))
	target := "/releases/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
	if from == "waiting" {
		target = "/"
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// rerequest is POST /releases/{namespace}/{name}/rerequest: it asks for a new approval window on
// an expired gate for the signed-in person, the way `ferry approve --rerequest` does (the
// annotation the Release controller consumes). RBAC must let the person patch the Release; the
// UI then patches it with its own identity, naming the person, and Ferry's Release webhook lets
// the UI change nothing else.
func (s *Server) rerequest(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	if err := s.sessions.CheckCSRF(r, sess); err != nil {
		s.renderError(w, r, sess, http.StatusForbidden, "Refused", err.Error())
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	env := r.PostFormValue("environment")
	if env == "" || strings.Contains(env, ",") {
		s.renderError(w, r, sess, http.StatusBadRequest, "Not a request", "The form must name one environment.")
		return
	}
	err := s.reRequestFor(r.Context(), sess, ns, name, env)
	if err != nil {
		status, message := apiRefusal(err)
		s.log.Info("Re-request refused", "user", sess.User, "release", klogRef(ns, name), "environment", env, "reason", message)
		s.showRelease(w, r, sess, status, &formError{key: fmt.Sprintf("%s/%s/%s/0", ns, name, env), message: message})
		return
	}
	s.log.Info("Gate re-requested", "user", sess.User, "release", klogRef(ns, name), "environment", env)
	s.setFlash(w, r, fmt.Sprintf("You re-requested the approval gate of %s for Release %s.", env, name))
	http.Redirect(w, r, "/releases/"+url.PathEscape(ns)+"/"+url.PathEscape(name), http.StatusSeeOther)
}

func (s *Server) reRequestFor(ctx context.Context, sess *auth.Session, ns, name, env string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	attrs := authorizationv1.ResourceAttributes{Namespace: ns, Verb: "patch", Group: ferryv1.GroupVersion.Group, Resource: "releases", Name: name}
	person, err := s.actFor(ctx, sess, attrs)
	if err != nil {
		return err
	}
	rel := &ferryv1.Release{}
	if err := s.apiReader.Get(ctx, namespacedName(ns, name), rel); err != nil {
		return err
	}
	envs := []string{env}
	for _, e := range strings.Split(rel.Annotations[ferryv1.ReRequestAnnotation], ",") {
		if e = strings.TrimSpace(e); e != "" && !slices.Contains(envs, e) {
			envs = append(envs, e)
		}
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		ferryv1.ReRequestAnnotation:        strings.Join(envs, ","),
		ferryv1.AssertedIdentityAnnotation: person,
	}}})
	if err != nil {
		return err
	}
	return s.writer.Patch(ctx, rel, client.RawPatch(types.MergePatchType, body))
}

// createFor creates an Approval for the signed-in person.
func (s *Server) createFor(ctx context.Context, sess *auth.Session, a *ferryv1.Approval) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	attrs := authorizationv1.ResourceAttributes{Namespace: a.Namespace, Verb: "create", Group: ferryv1.GroupVersion.Group, Resource: "approvals"}
	person, err := s.actFor(ctx, sess, attrs)
	if err != nil {
		return err
	}
	if a.Annotations == nil {
		a.Annotations = map[string]string{}
	}
	a.Annotations[ferryv1.AssertedIdentityAnnotation] = person
	return s.writer.Create(ctx, a)
}

// actFor returns the annotation that names the signed-in person to Ferry's webhook, once RBAC
// says the person may do what attrs say; a refusal reads as RBAC's own. The UI never names a
// Kubernetes (system:) user or group, nor, for a person signed in with OpenID Connect, a user or
// group without the configured prefix (a session from before a prefix was configured must sign
// in again).
func (s *Server) actFor(ctx context.Context, sess *auth.Session, attrs authorizationv1.ResourceAttributes) (string, error) {
	if err := s.checkAssertable(sess); err != nil {
		return "", apierrors.NewForbidden(schema.GroupResource{Group: attrs.Group, Resource: attrs.Resource}, attrs.Name, err)
	}
	allowed, err := s.access.ask(ctx, sess.Identity, attrs)
	if err != nil {
		return "", err
	}
	if !allowed {
		return "", apierrors.NewForbidden(schema.GroupResource{Group: attrs.Group, Resource: attrs.Resource}, attrs.Name,
			fmt.Errorf("User %q cannot %s resource %q in API group %q in the namespace %q", sess.User, attrs.Verb, attrs.Resource, attrs.Group, attrs.Namespace)) //nolint:staticcheck // ST1005: RBAC's own wording
	}
	data, err := json.Marshal(ferryv1.Approver{Username: sess.User, Groups: sess.Groups})
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// checkAssertable refuses to name a person the UI must never act for.
func (s *Server) checkAssertable(sess *auth.Session) error {
	if strings.HasPrefix(sess.User, "system:") {
		return fmt.Errorf("the UI never acts for Kubernetes user %q", sess.User)
	}
	oidc := sess.Method == auth.MethodOIDC
	if oidc && !strings.HasPrefix(sess.User, s.opts.OIDCUsernamePrefix) {
		return fmt.Errorf("user %q lacks the username prefix %q of people who sign in with OpenID Connect: sign in again", sess.User, s.opts.OIDCUsernamePrefix)
	}
	for _, g := range sess.Groups {
		switch {
		case strings.HasPrefix(g, "system:"):
			return fmt.Errorf("the UI never asserts Kubernetes group %q (user %q)", g, sess.User)
		case oidc && !strings.HasPrefix(g, s.opts.OIDCGroupsPrefix):
			return fmt.Errorf("group %q of user %q lacks the groups prefix %q of OpenID Connect groups: sign in again", g, sess.User, s.opts.OIDCGroupsPrefix)
		}
	}
	return nil
}

// approvalPrefix names Approvals after what they decide; the API server adds a random suffix.
func approvalPrefix(release, env string, batch int32) string {
	p := release + "-" + env + "-"
	if batch > 0 {
		p = fmt.Sprintf("%s-%s-batch%d-", release, env, batch)
	}
	if len(p) > 200 {
		p = p[:200]
	}
	return p
}

// apiRefusal is the status to answer with and the API server's message, verbatim: a webhook's
// denial reads `admission webhook "…" denied the request: …`, RBAC's `… is forbidden: User "…"
// cannot create resource …`.
func apiRefusal(err error) (int, string) {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := int(status.Status().Code)
		if code < 400 || code > 599 {
			code = http.StatusBadGateway
		}
		return code, status.Status().Message
	}
	return http.StatusBadGateway, err.Error()
}

func klogRef(ns, name string) string { return ns + "/" + name }

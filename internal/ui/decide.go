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

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/ui/auth"
)

func namespacedName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// decide is POST /releases/{namespace}/{name}/decide: it creates an Approval as the signed-in
// person. The API server (RBAC, then Ferry's Approval webhook) decides whether it stands; a
// refusal is shown as the API server worded it.
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
	if err := s.createAs(r.Context(), sess.Identity, a); err != nil {
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

// rerequest is POST /releases/{namespace}/{name}/rerequest: it asks, as the signed-in person,
// for a new approval window on an expired gate, the way `ferry approve --rerequest` does (the
// annotation the Release controller consumes). RBAC decides who may (patch on releases).
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
	err := s.reRequestAs(r.Context(), sess.Identity, ns, name, env)
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

func (s *Server) reRequestAs(ctx context.Context, id auth.Identity, ns, name, env string) error {
	c, err := s.userClient(id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rel := &ferryv1.Release{}
	if err := c.Get(ctx, namespacedName(ns, name), rel); err != nil {
		return err
	}
	envs := []string{env}
	for _, e := range strings.Split(rel.Annotations[approval.ReRequestAnnotation], ",") {
		if e = strings.TrimSpace(e); e != "" && !slices.Contains(envs, e) {
			envs = append(envs, e)
		}
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{approval.ReRequestAnnotation: strings.Join(envs, ",")}}})
	if err != nil {
		return err
	}
	return c.Patch(ctx, rel, client.RawPatch(types.MergePatchType, body))
}

// createAs creates obj impersonating id.
func (s *Server) createAs(ctx context.Context, id auth.Identity, a *ferryv1.Approval) error {
	c, err := s.userClient(id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.Create(ctx, a)
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

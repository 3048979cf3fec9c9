package gitlabreceiver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// +kubebuilder:rbac:groups=ferry.dev,resources=previews,verbs=get;list;watch;delete

// endedMergeRequest returns the IID of the merge request a Merge Request Hook says was merged or
// closed; 0 for every other action or payload.
func endedMergeRequest(payload []byte) int64 {
	var p mergeRequestPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return 0
	}
	switch p.ObjectAttributes.Action {
	case "merge", "close":
		return max(p.ObjectAttributes.IID, 0)
	}
	return 0
}

// endPreviews deletes the Preview of a merge request that was merged or closed, in each Project
// the delivery authenticated for; the preview controller then deletes its namespace. The Preview is
// looked up by the Project's own name and the merge request's IID in the Project's namespace: a
// delivery cannot name any other namespace.
// notBuilt is why the delivery builds nothing; it leads the answer.
func (r *Receiver) endPreviews(ctx context.Context, iid int64, notBuilt string, projects []authenticated) (int, answer) {
	var ended []string
	for _, a := range projects {
		p := &a.project
		name := ferryv1.PreviewName(p.Name, iid)
		pv := &ferryv1.Preview{}
		if err := r.reader.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: name}, pv); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			r.log.Error(err, "Failed to read a Preview", "preview", p.Namespace+"/"+name)
			return http.StatusServiceUnavailable, answer{Result: resultError, Error: "Ferry could not read the merge request's preview; GitLab may redeliver"}
		}
		if pv.Spec.Project != p.Name || pv.Spec.MergeRequestIID != iid || !pv.DeletionTimestamp.IsZero() {
			continue
		}
		uid := pv.UID
		if err := r.deletePreview(ctx, pv, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			r.log.Error(err, "Failed to delete a Preview", "preview", p.Namespace+"/"+name)
			return http.StatusServiceUnavailable, answer{Result: resultError, Error: "Ferry could not delete the merge request's preview; GitLab may redeliver"}
		}
		ended = append(ended, p.Namespace+"/"+name)
	}
	if len(ended) == 0 {
		return http.StatusOK, answer{Result: resultIgnored, Reason: strings.TrimPrefix(notBuilt+fmt.Sprintf("; merge request !%d has no preview", iid), "; ")}
	}
	return http.StatusOK, answer{Result: resultAccepted, Reason: notBuilt, Message: "deleting preview " + strings.Join(ended, ", ")}
}

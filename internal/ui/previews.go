package ui

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// +kubebuilder:rbac:groups=ferry.dev,resources=previews,verbs=get;list;watch

type previewsData struct {
	Rows []previewRow
}

type previewRow struct {
	Preview *ferryv1.Preview
	State   state
	// DeleteFailed says why the namespace could not be deleted yet (it is retried); "" when not.
	DeleteFailed string
}

// previewsPage lists the live previews of merge requests the person may see, a namespace that
// failed to delete included.
func (s *Server) previewsPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	items, err := s.previews(r.Context(), sess.Identity)
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	slices.SortFunc(items, func(a, b ferryv1.Preview) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	d := previewsData{}
	for i := range items {
		row := previewRow{Preview: &items[i], State: readyState(items[i].Status.Conditions)}
		if c := meta.FindStatusCondition(items[i].Status.Conditions, ferryv1.PreviewDeletedCondition); c != nil && c.Status == metav1.ConditionFalse {
			row.DeleteFailed = c.Message
		}
		d.Rows = append(d.Rows, row)
	}
	s.render(w, r, sess, http.StatusOK, "previews", "Previews", d)
}

func (s *Server) previews(ctx context.Context, id auth.Identity) ([]ferryv1.Preview, error) {
	var list ferryv1.PreviewList
	if err := s.reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("failed to list Previews: %w", err)
	}
	return visibleItems(ctx, s.access, id, "previews", list.Items), nil
}

package admission

import (
	"context"
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/verify"
	"github.com/ferryci/ferry/internal/window"
)

// EnvironmentWebhook refuses deploy windows whose schedule or time zone cannot be read, which
// the CRD's schema and CEL rules cannot check, with the field named. Its failure policy is Ignore
// so that Environments can be applied while Ferry is down; a window that gets in that way keeps
// the environment closed, and says why, until it is fixed.
type EnvironmentWebhook struct{}

// +kubebuilder:webhook:path=/validate-ferry-dev-v1alpha1-environment,mutating=false,failurePolicy=ignore,sideEffects=None,groups=ferry.dev,resources=environments,verbs=create;update,versions=v1alpha1,name=venvironments.ferry.dev,admissionReviewVersions=v1

// ValidateCreate checks the windows and the verification checks.
func (w *EnvironmentWebhook) ValidateCreate(_ context.Context, env *ferryv1.Environment) (admission.Warnings, error) {
	return nil, validateEnvironment(env)
}

// ValidateUpdate checks the windows and the verification checks.
func (w *EnvironmentWebhook) ValidateUpdate(_ context.Context, _, env *ferryv1.Environment) (admission.Warnings, error) {
	return nil, validateEnvironment(env)
}

// validateEnvironment refuses what the schema cannot judge: windows (schedule, time zone) and
// verification checks (a path that would leave the Service's proxy, a bodyMatch that does not
// compile).
func validateEnvironment(env *ferryv1.Environment) error {
	errs := windowErrors(env)
	for i := range env.Spec.Verification {
		for _, fe := range verify.Validate(&env.Spec.Verification[i]) {
			path := field.NewPath("spec", "verification").Index(i)
			for part := range strings.SplitSeq(fe.Field, ".") {
				path = path.Child(part)
			}
			errs = append(errs, field.Invalid(path, fe.Value, fe.Err.Error()))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(ferryv1.GroupVersion.WithKind("Environment").GroupKind(), env.Name, errs)
}

// ValidateDelete allows every deletion.
func (w *EnvironmentWebhook) ValidateDelete(context.Context, *ferryv1.Environment) (admission.Warnings, error) {
	return nil, nil
}

func windowErrors(env *ferryv1.Environment) field.ErrorList {
	var errs field.ErrorList
	for i, dw := range env.Spec.Windows {
		if _, err := window.Parse(dw); err != nil {
			var fe *window.FieldError
			path := field.NewPath("spec", "windows").Index(i)
			if !errors.As(err, &fe) {
				errs = append(errs, field.Invalid(path, dw.Name, err.Error()))
				continue
			}
			var value any
			switch fe.Field {
			case "schedule":
				value = truncate(dw.Schedule, 64)
			case "timeZone":
				value = truncate(dw.TimeZone, 64)
			default:
				value = dw.Duration.Duration.String()
			}
			errs = append(errs, field.Invalid(path.Child(fe.Field), value, fe.Err.Error()))
		}
	}
	return errs
}

// FreezeWebhook refuses a Freeze whose selectors cannot be read or are too large to read cheaply,
// with the field named. Start, end and reason are checked by the CRD (CEL). Its failure policy is
// Ignore so that an incident's Freeze can be created while Ferry is down: a selector that cannot
// be read selects every Environment (a freeze fails closed).
type FreezeWebhook struct{}

// +kubebuilder:webhook:path=/validate-ferry-dev-v1alpha1-freeze,mutating=false,failurePolicy=ignore,sideEffects=None,groups=ferry.dev,resources=freezes,verbs=create;update,versions=v1alpha1,name=vfreezes.ferry.dev,admissionReviewVersions=v1

// ValidateCreate checks the selectors.
func (w *FreezeWebhook) ValidateCreate(_ context.Context, f *ferryv1.Freeze) (admission.Warnings, error) {
	return warnEverything(f), validateFreeze(f)
}

// ValidateUpdate checks the selectors.
func (w *FreezeWebhook) ValidateUpdate(_ context.Context, _, f *ferryv1.Freeze) (admission.Warnings, error) {
	return warnEverything(f), validateFreeze(f)
}

// ValidateDelete allows every deletion: deleting a Freeze ends it.
func (w *FreezeWebhook) ValidateDelete(context.Context, *ferryv1.Freeze) (admission.Warnings, error) {
	return nil, nil
}

// maxSelectorTerms bounds the labels and expressions of a selector, and the values of an
// expression: every waiting Release evaluates every Freeze.
const maxSelectorTerms = 32

func validateFreeze(f *ferryv1.Freeze) error {
	var errs field.ErrorList
	errs = append(errs, validateSelector(&f.Spec.EnvironmentSelector, field.NewPath("spec", "environmentSelector"))...)
	if f.Spec.NamespaceSelector != nil {
		errs = append(errs, validateSelector(f.Spec.NamespaceSelector, field.NewPath("spec", "namespaceSelector"))...)
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(ferryv1.GroupVersion.WithKind("Freeze").GroupKind(), f.Name, errs)
}

func validateSelector(sel *metav1.LabelSelector, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if n := len(sel.MatchLabels); n > maxSelectorTerms {
		errs = append(errs, field.TooMany(path.Child("matchLabels"), n, maxSelectorTerms))
	}
	if n := len(sel.MatchExpressions); n > maxSelectorTerms {
		errs = append(errs, field.TooMany(path.Child("matchExpressions"), n, maxSelectorTerms))
	}
	for i, e := range sel.MatchExpressions {
		if n := len(e.Values); n > maxSelectorTerms {
			errs = append(errs, field.TooMany(path.Child("matchExpressions").Index(i).Child("values"), n, maxSelectorTerms))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		errs = append(errs, field.Invalid(path, truncate(sel.String(), 256), err.Error()))
	}
	return errs
}

// warnEverything warns that a Freeze with an empty environment selector stops every Environment.
func warnEverything(f *ferryv1.Freeze) admission.Warnings {
	if len(f.Spec.EnvironmentSelector.MatchLabels) == 0 && len(f.Spec.EnvironmentSelector.MatchExpressions) == 0 {
		return admission.Warnings{"spec.environmentSelector is empty: this Freeze stops rollouts into every Environment"}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

package v1alpha1_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferryci/ferry/internal/testutil"
)

// TestWindowAndFreezeValidation: the schema and CEL rules of deploy windows, freezes, Freezes and
// break-glass Approvals against the real API server, each refusal naming the field. (Schedules
// and time zones that only a parser can judge are the admission webhook's: webhooks/admission.)
func TestWindowAndFreezeValidation(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ns := testutil.Namespace(t, c)

	window := func(fields string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: w}\nspec:\n  clusters: [a]\n  windows:\n  - {name: office, " + fields + "}\n"
	}
	envFreeze := func(fields string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: f}\nspec:\n  clusters: [a]\n  freezes:\n  - {name: quarter-end, " + fields + "}\n"
	}
	freeze := func(fields string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Freeze\nmetadata: {name: incident}\nspec: {" + fields + "}\n"
	}
	breakGlass := func(fields string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Approval\nmetadata: {generateName: a-}\nspec: {release: r, environment: prod, breakGlass: true, " + fields + "}\n"
	}
	const start, end = `start: "2026-06-01T00:00:00Z"`, `end: "2026-06-02T00:00:00Z"`

	for _, tc := range []struct {
		name     string
		manifest string
		wantErr  []string
	}{
		{"an allow window", window(`kind: Allow, schedule: "0 9 * * 1-5", duration: 8h, timeZone: Europe/Berlin`), nil},
		{"a deny window in UTC by default", window(`kind: Deny, schedule: "0 22 * * FRI", duration: 60h`), nil},
		{"an unknown kind", window(`kind: Maybe, schedule: "0 9 * * *", duration: 1h`), []string{"spec.windows[0].kind"}},
		{"a zero duration", window(`kind: Allow, schedule: "0 9 * * *", duration: 0s`), []string{"spec.windows[0].duration", "duration must be positive"}},
		{"a negative duration", window(`kind: Allow, schedule: "0 9 * * *", duration: -1h`), []string{"spec.windows[0].duration", "duration must be positive"}},
		{"a duration over a week", window(`kind: Allow, schedule: "0 9 * * *", duration: 169h`), []string{"spec.windows[0].duration", "at most 168h"}},
		{"a duration that is not one", window(`kind: Allow, schedule: "0 9 * * *", duration: "1 fortnight"`), []string{"spec.windows[0]"}},
		{"four cron fields", window(`kind: Allow, schedule: "0 9 * *", duration: 1h`), []string{"spec.windows[0].schedule"}},
		{"a descriptor", window(`kind: Allow, schedule: "@daily", duration: 1h`), []string{"spec.windows[0].schedule"}},
		{"a time zone in the schedule", window(`kind: Allow, schedule: "CRON_TZ=UTC 0 9 * * *", duration: 1h`), []string{"spec.windows[0].schedule"}},
		{"a huge schedule", window(fmt.Sprintf(`kind: Allow, schedule: "%s * * * *", duration: 1h`, strings.Repeat("1,", 5000)+"1")), []string{"spec.windows[0].schedule", "Too long"}},
		{"a time zone path", window(`kind: Allow, schedule: "0 9 * * *", duration: 1h, timeZone: "../../etc/passwd"`), []string{"spec.windows[0].timeZone"}},
		{"a window without a name", "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: w}\nspec:\n  clusters: [a]\n  windows:\n  - {kind: Allow, schedule: \"0 9 * * *\", duration: 1h}\n", []string{"spec.windows[0].name"}},

		{"an environment freeze", envFreeze(start + ", " + end + ", reason: books close"), nil},
		{"an environment freeze with no end", envFreeze(start + ", reason: books close"), nil},
		{"an environment freeze ending before it starts", envFreeze(`start: "2026-06-02T00:00:00Z", end: "2026-06-01T00:00:00Z", reason: x`), []string{"spec.freezes[0].end", "end must be after start"}},
		{"an environment freeze ending as it starts", envFreeze(start + `, end: "2026-06-01T00:00:00Z", reason: x`), []string{"spec.freezes[0].end", "end must be after start"}},
		{"an environment freeze without a reason", envFreeze(start), []string{"spec.freezes[0].reason"}},
		{"an environment freeze with a blank reason", envFreeze(start + `, reason: "   "`), []string{"spec.freezes[0].reason", "reason must say why"}},

		{"a Freeze of everything", freeze(start + ", reason: incident 42, environmentSelector: {}"), nil},
		{"a Freeze of some environments", freeze(start + ", " + end + ", reason: incident 42, environmentSelector: {matchLabels: {tier: payments}}"), nil},
		{"a Freeze of everything without a reason", freeze(start + ", environmentSelector: {}"), []string{"spec.reason"}},
		{"a Freeze of everything with an empty reason", freeze(start + `, reason: "", environmentSelector: {}`), []string{"spec.reason"}},
		{"a Freeze with a blank reason", freeze(start + `, reason: " ", environmentSelector: {}`), []string{"spec.reason", "reason must say why"}},
		{"a Freeze without a selector", freeze(start + ", reason: incident 42"), []string{"spec.environmentSelector"}},
		{"a Freeze without a start", freeze("reason: incident 42, environmentSelector: {}"), []string{"spec.start"}},
		{"a Freeze ending before it starts", freeze(`start: "2026-06-02T00:00:00Z", end: "2026-06-01T00:00:00Z", reason: x, environmentSelector: {}`), []string{"spec.end", "end must be after start"}},
		{"a Freeze with a huge reason", freeze(start + `, reason: "` + strings.Repeat("x", 5000) + `", environmentSelector: {}`), []string{"spec.reason", "Too long"}},

		{"a break-glass with a reason", breakGlass(`decision: Approve, comment: "hotfix for incident 42"`), nil},
		{"a break-glass without a reason", breakGlass(`decision: Approve`), []string{"spec.comment", "a break-glass decision needs a comment"}},
		{"a break-glass with a blank reason", breakGlass(`decision: Approve, comment: "  "`), []string{"spec.comment", "a break-glass decision needs a comment"}},
		{"a break-glass rejection", breakGlass(`decision: Reject, comment: "no"`), []string{"spec.breakGlass", "decision Approve"}},
		{"a break-glass of a batch", breakGlass(`decision: Approve, comment: "x", batch: 2`), []string{"spec.breakGlass", "no batch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := create(t, c, ns, tc.manifest)
			if len(tc.wantErr) == 0 {
				check(t, err, "")
				return
			}
			for _, want := range tc.wantErr {
				check(t, err, want)
			}
		})
	}
}

package gitlabreceiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/text"
)

// requiredRole is the GitLab role each command needs in the Project's GitLab project. Developer is
// the role that may push to the project: someone who can push code can already make Ferry build
// it, so letting them rebuild, cancel or allow a commit to build gives them nothing new, while a
// Reporter or Guest (who cannot push) cannot make Ferry run code they chose.
var requiredRole = map[string]gitlab.AccessLevel{
	cmdRetest:      gitlab.Developer,
	cmdRetestForce: gitlab.Developer,
	cmdCancel:      gitlab.Developer,
	cmdOKToTest:    gitlab.Developer,
}

// okToTestRole is the role a merge request's author needs for it to build without /ok-to-test.
const okToTestRole = gitlab.Developer

// commandTimeout bounds one run of a command job (its GitLab calls retry with backoff within it).
const commandTimeout = 2 * time.Minute

// commandAttempts is how often a command job is run before it is given up (each run does only
// what the runs before it left undone).
const commandAttempts = 3

// handleNote answers a Note Hook, decoded into n (or err, see decodeNote): commands on a merge
// request run in the background (they call
// GitLab, which may be slow or rate-limited), and the answer says they were accepted; the reply
// note on the merge request says what happened.
func (r *Receiver) handleNote(n *noteCommands, err error, projects []authenticated) (int, answer) {
	var bad *payloadError
	if errors.As(err, &bad) {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: bad.msg}
	}
	var ig *ignored
	if errors.As(err, &ig) {
		return http.StatusOK, answer{Result: resultIgnored, Reason: ig.reason}
	}
	var accepted, reasons []string
	for i := range projects {
		p := projects[i].project
		if err := tracked(&p, n.mr); err != nil {
			reasons = append(reasons, reasonFor(&p, "the merge request is not built: "+err.Error(), len(projects)))
			continue
		}
		if p.Spec.GitLab.TokenSecretRef == nil {
			reasons = append(reasons, reasonFor(&p, "the Project has no GitLab API token (spec.gitlab.tokenSecretRef), which commands need to read roles and reply", len(projects)))
			continue
		}
		accepted = append(accepted, p.Namespace+"/"+p.Name)
		key := fmt.Sprintf("%s/%s/note/%d", p.Namespace, p.Name, n.noteID)
		r.runJob(key, func(ctx context.Context) error { return r.runCommands(ctx, &p, n) })
	}
	if len(accepted) == 0 {
		return http.StatusOK, answer{Result: resultIgnored, Reason: strings.Join(reasons, "; ")}
	}
	names := make([]string, 0, len(n.commands))
	for _, c := range n.commands {
		names = append(names, c.text())
	}
	return http.StatusAccepted, answer{Result: resultAccepted, Reason: strings.Join(reasons, "; "),
		Message: fmt.Sprintf("%s of comment %d on !%d accepted; Ferry's reply on the merge request says what happened", strings.Join(names, ", "), n.noteID, n.mr.mergeRequestIID)}
}

// runJob runs job in the background, again with backoff while it fails, and at most once at a
// time per key (a duplicate delivery arriving while the first still runs is dropped: the first
// one answers it). Stop waits for the jobs.
func (r *Receiver) runJob(key string, job func(context.Context) error) {
	if _, running := r.jobKeys.LoadOrStore(key, true); running {
		return
	}
	r.jobs.Add(1)
	go func() {
		defer r.jobs.Done()
		defer r.jobKeys.Delete(key)
		wait := time.Second
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(r.jobsCtx, commandTimeout)
			err := job(ctx)
			cancel()
			if err == nil {
				return
			}
			if attempt == commandAttempts || errors.Is(err, errPermanent) || gitlab.IsPermanent(err) || r.jobsCtx.Err() != nil {
				r.log.Error(err, "Gave up a merge request command", "job", key, "attempts", attempt)
				return
			}
			r.log.Info("A merge request command failed; retrying", "job", key, "problem", err.Error())
			select {
			case <-time.After(wait):
			case <-r.jobsCtx.Done():
			}
			wait *= 4
		}
	}()
}

// stopJobs waits up to grace for the running command jobs, then cancels them.
func (r *Receiver) stopJobs(grace time.Duration) {
	done := make(chan struct{})
	go func() { r.jobs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		r.log.Info("Cancelling merge request commands still running as the receiver stops")
	}
	r.stopJobsCtx()
	<-done
}

// commandMarker is the hidden line of a reply that says which comment it answers, so that a
// comment is answered once however often it is delivered.
func commandMarker(p *ferryv1.Project, noteID int64) string {
	return fmt.Sprintf("<!-- ferry:command %s/%s note %d -->", p.Namespace, p.Name, noteID)
}

// runCommands runs a comment's commands for Project p and replies on the merge request. A run
// after a failed one repeats nothing: the reply marks the comment answered, a Build made by the
// comment is found by its name, a cancelled Build is not cancelled again.
func (r *Receiver) runCommands(ctx context.Context, p *ferryv1.Project, n *noteCommands) error {
	api, err := r.projectAPI(ctx, p)
	if err != nil {
		return err
	}
	project := gitlabProject(p)
	iid := n.mr.mergeRequestIID
	marker := commandMarker(p, n.noteID)
	if answered, err := api.FindMergeRequestNote(ctx, project, iid, marker); err != nil || answered {
		return err
	}
	access, err := api.MemberAccess(ctx, project, n.authorID)
	if err != nil {
		return err
	}
	who := n.author
	if who == "" {
		who = "user " + strconv.FormatInt(n.authorID, 10)
	}
	lines := []string{fmt.Sprintf("Ferry, for the comment of @%s:", who)}
	for _, c := range n.commands {
		line, err := r.runCommand(ctx, p, n, c, access, who)
		if err != nil {
			return err
		}
		lines = append(lines, "- `"+c.text()+"`: "+line)
	}
	if n.more > 0 {
		lines = append(lines, fmt.Sprintf("- %d more command lines were not run: Ferry runs at most %d commands of one comment.", n.more, maxCommands))
	}
	body := defuse(strings.Join(lines, "\n")) + "\n\n" + marker
	if err := api.CreateMergeRequestNote(ctx, project, iid, body); err != nil {
		return err
	}
	r.log.Info("Answered merge request commands", "project", klog.KObj(p), "mergeRequest", iid, "note", n.noteID)
	return nil
}

// runCommand runs one command and says what happened, in one line of the reply.
func (r *Receiver) runCommand(ctx context.Context, p *ferryv1.Project, n *noteCommands, c command, access gitlab.AccessLevel, who string) (string, error) {
	if !c.known {
		return "not a Ferry command; nothing was done. Ferry's commands are " + knownCommands + ", each at the start of a line of a comment.", nil
	}
	if need := requiredRole[c.name]; access < need {
		has := "is not a member of " + p.Spec.GitLab.ProjectPath
		if access > gitlab.NoAccess {
			has = "has the " + access.String() + " role"
		}
		return fmt.Sprintf("needs the %s role or higher in %s, and @%s %s; nothing was done.", need, projectName(p), who, has), nil
	}
	switch c.name {
	case cmdCancel:
		return r.cancelMergeRequest(ctx, p, n, who)
	case cmdRetest, cmdRetestForce, cmdOKToTest:
		if n.state != "" && n.state != "opened" {
			return fmt.Sprintf("the merge request is %s; nothing was built.", n.state), nil
		}
		if !fullSHA.MatchString(n.mr.revision) {
			return "the comment does not name the merge request's head commit; nothing was built.", nil
		}
		if c.name == cmdOKToTest {
			return r.okToTest(ctx, p, n, who)
		}
		return r.retest(ctx, p, n, c.name == cmdRetestForce, who)
	}
	return "", fmt.Errorf("command %s has no implementation", c.name)
}

// retest builds the merge request's head again: the commit's first Build when it has none, a new
// run when its last Build failed or was cancelled (or always, forced); never when it succeeded
// (unless forced) or is still running.
func (r *Receiver) retest(ctx context.Context, p *ferryv1.Project, n *noteCommands, force bool, who string) (string, error) {
	sha := short7(n.mr.revision)
	builds, err := r.commitBuilds(ctx, p, n.mr.ref, n.mr.revision)
	if err != nil {
		return "", err
	}
	if mine := madeBy(builds, n.noteID); mine != nil {
		return fmt.Sprintf("Build `%s` of commit %s started.", mine.Name, sha), nil
	}
	if len(builds) == 0 {
		return r.startBuild(ctx, p, n, "", nil, who)
	}
	last := &builds[0]
	switch {
	case force:
	case buildSucceeded(last):
		return fmt.Sprintf("skipped: the last Build of commit %s, `%s`, succeeded. Comment `/retest force` to build it again.", sha, last.Name), nil
	case !buildFinished(last):
		return fmt.Sprintf("skipped: Build `%s` of commit %s is still running.", last.Name, sha), nil
	}
	return r.startBuild(ctx, p, n, "note-"+strconv.FormatInt(n.noteID, 10), nil, who)
}

// okToTest lets the merge request's head commit build: it creates the commit's Build on the merge
// request's ref, which is the record that a member allowed it (see GitLabOKToTestAnnotation).
func (r *Receiver) okToTest(ctx context.Context, p *ferryv1.Project, n *noteCommands, who string) (string, error) {
	sha := short7(n.mr.revision)
	builds, err := r.commitBuilds(ctx, p, n.mr.ref, n.mr.revision)
	if err != nil {
		return "", err
	}
	if mine := madeBy(builds, n.noteID); mine != nil {
		return fmt.Sprintf("commit %s may build: Build `%s` started. A new push needs a new `/ok-to-test`.", sha, mine.Name), nil
	}
	if len(builds) > 0 {
		return fmt.Sprintf("commit %s already has Build `%s`; nothing more to allow. Comment `/retest` to build it again.", sha, builds[0].Name), nil
	}
	line, err := r.startBuild(ctx, p, n, "", map[string]string{ferryv1.GitLabOKToTestAnnotation: text.Truncate(who, 255)}, who)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("commit %s may build (allowed by @%s): %s A new push needs a new `/ok-to-test`.", sha, who, line), nil
}

// startBuild creates a Build of the merge request's head under run key runKey (see BuildName).
func (r *Receiver) startBuild(ctx context.Context, p *ferryv1.Project, n *noteCommands, runKey string, annotations map[string]string, who string) (string, error) {
	note := strconv.FormatInt(n.noteID, 10)
	b := newRun(p, n.mr, runKey, "note-"+note)
	b.Spec.Trigger.User = text.Truncate(who, 255)
	b.Spec.Trigger.UserID = n.authorID
	b.Spec.Trigger.UserEmail = ""
	metav1.SetMetaDataAnnotation(&b.ObjectMeta, ferryv1.GitLabCommandNoteAnnotation, note)
	for k, v := range annotations {
		metav1.SetMetaDataAnnotation(&b.ObjectMeta, k, v)
	}
	err := r.createBuild(ctx, b)
	switch {
	case err == nil:
		r.log.Info("Build created by a merge request command", "build", klog.KObj(b), "note", n.noteID, "user", who)
	case apierrors.IsAlreadyExists(err):
		// Made by a delivery or command in between: this command built nothing new.
		return fmt.Sprintf("commit %s already has Build `%s`; nothing new was built.", short7(n.mr.revision), b.Name), nil
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return "", fmt.Errorf("%w: the API server refused Build %s: %s", errPermanent, b.Name, err.Error())
	default:
		return "", fmt.Errorf("failed to create Build %s: %w", b.Name, err)
	}
	return fmt.Sprintf("Build `%s` of commit %s started.", b.Name, short7(n.mr.revision)), nil
}

// cancelMergeRequest cancels the merge request's unfinished Builds, as `ferry cancel` does.
func (r *Receiver) cancelMergeRequest(ctx context.Context, p *ferryv1.Project, n *noteCommands, who string) (string, error) {
	builds, err := r.commitBuilds(ctx, p, n.mr.ref, "")
	if err != nil {
		return "", err
	}
	tag := fmt.Sprintf("(comment %d)", n.noteID)
	reason := text.Truncate(fmt.Sprintf("cancelled by @%s with /cancel on merge request !%d %s", who, n.mr.mergeRequestIID, tag), 512)
	var cancelled []string
	for i := range builds {
		b := &builds[i]
		if b.Spec.Cancelled {
			if strings.HasSuffix(b.Spec.CancelReason, tag) {
				cancelled = append(cancelled, "`"+b.Name+"`")
			}
			continue
		}
		if buildFinished(b) {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"cancelled": true, "cancelReason": reason}})
		if err := r.patchBuild(ctx, b, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
			return "", fmt.Errorf("failed to cancel Build %s: %w", b.Name, err)
		}
		r.log.Info("Build cancelled by a merge request command", "build", klog.KObj(b), "note", n.noteID, "user", who)
		cancelled = append(cancelled, "`"+b.Name+"`")
	}
	if len(cancelled) == 0 {
		return fmt.Sprintf("nothing to cancel: no Build of merge request !%d is running.", n.mr.mergeRequestIID), nil
	}
	slices.Sort(cancelled)
	return "cancelled " + strings.Join(cancelled, ", ") + ".", nil
}

// commitBuilds lists the Project's Builds of ref (and of the commit, when revision is set), newest
// first.
func (r *Receiver) commitBuilds(ctx context.Context, p *ferryv1.Project, ref, revision string) ([]ferryv1.Build, error) {
	var list ferryv1.BuildList
	if err := r.apiReader.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingLabels{ferryv1.ProjectLabel: labelValue(p.Name)}); err != nil {
		return nil, fmt.Errorf("failed to list the Builds of Project %s/%s: %w", p.Namespace, p.Name, err)
	}
	var out []ferryv1.Build
	for _, b := range list.Items {
		if b.Spec.Project == p.Name && b.Spec.Ref == ref && (revision == "" || b.Spec.Revision == revision) {
			out = append(out, b)
		}
	}
	// Newest first. Creation times have whole seconds; within one, a commit's first Build (named
	// without a run key) is the oldest, and Builds made by commands follow their comments' order.
	rank := func(b *ferryv1.Build) (int64, int64) {
		first := int64(1)
		if b.Name == BuildName(p.Name, b.Spec.Trigger.Kind, b.Spec.Ref, b.Spec.Revision, "") {
			first = 0
		}
		note, _ := strconv.ParseInt(b.Annotations[ferryv1.GitLabCommandNoteAnnotation], 10, 64)
		return first, note
	}
	slices.SortFunc(out, func(a, b ferryv1.Build) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		af, an := rank(&a)
		bf, bn := rank(&b)
		if af != bf {
			return int(bf - af)
		}
		if an != bn {
			if bn > an {
				return 1
			}
			return -1
		}
		return strings.Compare(b.Name, a.Name)
	})
	return out, nil
}

// madeBy is the Build a command of comment noteID created, if any.
func madeBy(builds []ferryv1.Build, noteID int64) *ferryv1.Build {
	for i := range builds {
		if builds[i].Annotations[ferryv1.GitLabCommandNoteAnnotation] == strconv.FormatInt(noteID, 10) {
			return &builds[i]
		}
	}
	return nil
}

func buildSucceeded(b *ferryv1.Build) bool {
	return meta.IsStatusConditionTrue(b.Status.Conditions, ferryv1.ReadyCondition)
}

// buildFinished: the Build ended, whatever its outcome (or was cancelled).
func buildFinished(b *ferryv1.Build) bool {
	if b.Status.CompletionTime != nil {
		return true
	}
	c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
	return c != nil && c.Status != metav1.ConditionUnknown
}

// needsOKToTest says why a merge request must wait for /ok-to-test before it builds ("" when it
// need not): it comes from a fork, or its author has no Developer role in the project (read
// through GitLab's members API, which needs the Project's token; without one only forks wait).
func (r *Receiver) needsOKToTest(ctx context.Context, p *ferryv1.Project, t *trigger) (string, error) {
	wait := fmt.Sprintf(": commit %s builds once a member with the %s role or higher comments /ok-to-test", short7(t.revision), okToTestRole)
	if t.sourceProjectID != 0 && t.targetProjectID != 0 && t.sourceProjectID != t.targetProjectID {
		return fmt.Sprintf("merge request !%d comes from a fork (project %d)%s", t.mergeRequestIID, t.sourceProjectID, wait), nil
	}
	if p.Spec.GitLab.TokenSecretRef == nil {
		return "", nil
	}
	if t.authorID <= 0 {
		return fmt.Sprintf("merge request !%d does not name its author%s", t.mergeRequestIID, wait), nil
	}
	api, err := r.projectAPI(ctx, p)
	if err != nil {
		return "", err
	}
	access, err := api.MemberAccess(ctx, gitlabProject(p), t.authorID)
	if err != nil {
		return "", err
	}
	if access < okToTestRole {
		return fmt.Sprintf("merge request !%d was opened by a user without the %s role in %s%s", t.mergeRequestIID, okToTestRole, projectName(p), wait), nil
	}
	return "", nil
}

// awaitOKToTest tells the merge request, once per commit, that it waits for /ok-to-test.
func (r *Receiver) awaitOKToTest(p *ferryv1.Project, t *trigger, why string) {
	if p.Spec.GitLab.TokenSecretRef == nil {
		return
	}
	p = p.DeepCopy()
	marker := fmt.Sprintf("<!-- ferry:awaiting-ok-to-test %s/%s %s -->", p.Namespace, p.Name, t.revision)
	r.runJob(marker, func(ctx context.Context) error {
		api, err := r.projectAPI(ctx, p)
		if err != nil {
			return err
		}
		project := gitlabProject(p)
		if found, err := api.FindMergeRequestNote(ctx, project, t.mergeRequestIID, marker); err != nil || found {
			return err
		}
		body := fmt.Sprintf("Ferry has not built this merge request: %s. Builds run code from the merge request with the Project's credentials, so a project member reviews it first; a new push needs a new `/ok-to-test`.",
			strings.Replace(why, "comments /ok-to-test", "comments `/ok-to-test`", 1))
		return api.CreateMergeRequestNote(ctx, project, t.mergeRequestIID, defuse(body)+"\n\n"+marker)
	})
}

// defuse keeps a reply from running GitLab quick actions as Ferry's GitLab user: GitLab runs a
// line of a note that starts with "/" (a reply that quoted "/merge" at the start of a line would
// merge the merge request). Replies are written so that no line does; this makes sure.
func defuse(body string) string {
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimLeft(l, " \t"), "/") {
			lines[i] = "\u200b" + l
		}
	}
	return strings.Join(lines, "\n")
}

// errPermanent marks a command failure that running it again cannot mend.
var errPermanent = errors.New("permanent failure")

// projectAPI reads the Project's GitLab token and returns a client for its GitLab. The token
// never appears in an error.
func (r *Receiver) projectAPI(ctx context.Context, p *ferryv1.Project) (gitlab.API, error) {
	token, err := gitlab.ProjectToken(ctx, r.apiReader, p)
	var missing *gitlab.MissingTokenError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("%w: %w", errPermanent, err)
	}
	if err != nil {
		return nil, err
	}
	return r.newAPI(p.Spec.GitLab.URL, token)
}

func gitlabProject(p *ferryv1.Project) gitlab.ProjectRef {
	return gitlab.ProjectRefOf(p)
}

func projectName(p *ferryv1.Project) string {
	if p.Spec.GitLab.ProjectPath != "" {
		return p.Spec.GitLab.ProjectPath
	}
	return "project " + strconv.FormatInt(p.Spec.GitLab.ProjectID, 10)
}

func short7(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

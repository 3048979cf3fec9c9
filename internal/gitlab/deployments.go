package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	gl "gitlab.com/gitlab-org/api/client-go"
)

// DeploymentStatus is a GitLab deployment's status as the API sets it: running, then success,
// failed or canceled.
type DeploymentStatus string

// Deployment statuses Ferry reports.
const (
	DeploymentRunning  DeploymentStatus = "running"
	DeploymentSuccess  DeploymentStatus = "success"
	DeploymentFailed   DeploymentStatus = "failed"
	DeploymentCanceled DeploymentStatus = "canceled"
)

// Terminal reports whether s ends a deployment.
func (s DeploymentStatus) Terminal() bool {
	return s == DeploymentSuccess || s == DeploymentFailed || s == DeploymentCanceled
}

// Deployment is what Ferry reads of a GitLab deployment.
type Deployment struct {
	ID          int64
	Environment string
	Ref         string
	SHA         string
	Status      DeploymentStatus
}

// NewDeployment is a deployment to create.
type NewDeployment struct {
	// Environment is the environment's name; GitLab creates the environment when it has none.
	Environment string
	// Ref is the branch or tag name (not refs/heads/…), Tag whether it is a tag.
	Ref string
	Tag bool
	// SHA is the deployed commit.
	SHA    string
	Status DeploymentStatus
}

// DeploymentsAPI is what the deployment reporter asks of GitLab. *Client implements it.
type DeploymentsAPI interface {
	// LastDeploymentID is the ID of the newest deployment of environment, 0 when it has none.
	LastDeploymentID(ctx context.Context, project ProjectRef, environment string) (int64, error)
	// FindDeployment looks through environment's deployments newer than afterID for one of sha at
	// ref, and returns it (nil when there is none).
	FindDeployment(ctx context.Context, project ProjectRef, environment, ref, sha string, afterID int64) (*Deployment, error)
	// CreateDeployment creates a deployment. A 5xx answer is not retried (GitLab may have saved
	// it): the caller looks with FindDeployment before it tries again.
	CreateDeployment(ctx context.Context, project ProjectRef, d NewDeployment) (*Deployment, error)
	// UpdateDeployment sets a deployment's status. Setting the status it already has is not an
	// error.
	UpdateDeployment(ctx context.Context, project ProjectRef, id int64, status DeploymentStatus) error
	// SetEnvironmentURL sets the external URL of the named environment, the link of GitLab's
	// Environments page and of the merge request's "deployed to" line.
	SetEnvironmentURL(ctx context.Context, project ProjectRef, environment, url string) error
}

var _ DeploymentsAPI = (*Client)(nil)

func deploymentOf(d *gl.Deployment) *Deployment {
	out := &Deployment{ID: d.ID, Ref: d.Ref, SHA: d.SHA, Status: DeploymentStatus(d.Status)}
	if d.Environment != nil {
		out.Environment = d.Environment.Name
	}
	return out
}

// LastDeploymentID lists the environment's deployments newest first and returns the first ID.
func (c *Client) LastDeploymentID(ctx context.Context, project ProjectRef, environment string) (int64, error) {
	opt := &gl.ListProjectDeploymentsOptions{
		ListOptions: gl.ListOptions{PerPage: 1, Page: 1},
		OrderBy:     gl.Ptr("id"),
		Sort:        gl.Ptr("desc"),
		Environment: gl.Ptr(environment),
	}
	ds, _, err := c.api.Deployments.ListProjectDeployments(project.pid(), opt, gl.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("failed to list the deployments of environment %q of %s: %w", environment, project, convert(err))
	}
	if len(ds) == 0 {
		return 0, nil
	}
	return ds[0].ID, nil
}

// FindDeployment pages through the environment's deployments, newest first, down to afterID.
func (c *Client) FindDeployment(ctx context.Context, project ProjectRef, environment, ref, sha string, afterID int64) (*Deployment, error) {
	opt := &gl.ListProjectDeploymentsOptions{
		ListOptions: gl.ListOptions{PerPage: 100, Page: 1},
		OrderBy:     gl.Ptr("id"),
		Sort:        gl.Ptr("desc"),
		Environment: gl.Ptr(environment),
	}
	for range 20 {
		ds, resp, err := c.api.Deployments.ListProjectDeployments(project.pid(), opt, gl.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("failed to list the deployments of environment %q of %s: %w", environment, project, convert(err))
		}
		for _, d := range ds {
			if d.ID <= afterID {
				return nil, nil
			}
			if d.SHA == sha && d.Ref == ref {
				return deploymentOf(d), nil
			}
		}
		if resp == nil || resp.NextPage == 0 {
			return nil, nil
		}
		opt.Page = resp.NextPage
	}
	return nil, fmt.Errorf("more than 2000 deployments of environment %q of %s were made since deployment %d", environment, project, afterID)
}

// CreateDeployment creates a deployment; see DeploymentsAPI.
func (c *Client) CreateDeployment(ctx context.Context, project ProjectRef, d NewDeployment) (*Deployment, error) {
	ctx = context.WithValue(ctx, noRetryOn5xx{}, true)
	status := gl.DeploymentStatusValue(d.Status)
	out, _, err := c.api.Deployments.CreateProjectDeployment(project.pid(), &gl.CreateProjectDeploymentOptions{
		Environment: gl.Ptr(d.Environment),
		Ref:         gl.Ptr(d.Ref),
		SHA:         gl.Ptr(d.SHA),
		Tag:         gl.Ptr(d.Tag),
		Status:      &status,
	}, gl.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("failed to create a deployment of %s to environment %q of %s: %w", short(d.SHA), d.Environment, project, convert(err))
	}
	return deploymentOf(out), nil
}

// UpdateDeployment sets the status; GitLab's refusal to repeat a status counts as done.
func (c *Client) UpdateDeployment(ctx context.Context, project ProjectRef, id int64, status DeploymentStatus) error {
	value := gl.DeploymentStatusValue(status)
	_, _, err := c.api.Deployments.UpdateProjectDeployment(project.pid(), id, &gl.UpdateProjectDeploymentOptions{Status: &value}, gl.WithContext(ctx))
	if err == nil {
		return nil
	}
	err = convert(err)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest {
		// The transition may be refused because the deployment already has the status (an
		// earlier attempt got through and its answer was lost).
		current, _, getErr := c.api.Deployments.GetProjectDeployment(project.pid(), id, gl.WithContext(ctx))
		if getErr == nil && DeploymentStatus(current.Status) == status {
			return nil
		}
	}
	return fmt.Errorf("failed to set deployment %d of %s to %s: %w", id, project, status, err)
}

// SetEnvironmentURL finds the environment by name and sets its external_url.
func (c *Client) SetEnvironmentURL(ctx context.Context, project ProjectRef, environment, url string) error {
	envs, _, err := c.api.Environments.ListEnvironments(project.pid(), &gl.ListEnvironmentsOptions{Name: gl.Ptr(environment)}, gl.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("failed to find environment %q of %s: %w", environment, project, convert(err))
	}
	for _, e := range envs {
		if e.Name != environment {
			continue
		}
		if e.ExternalURL == url {
			return nil
		}
		_, _, err := c.api.Environments.EditEnvironment(project.pid(), e.ID, &gl.EditEnvironmentOptions{ExternalURL: gl.Ptr(url)}, gl.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("failed to set the URL of environment %q of %s: %w", environment, project, convert(err))
		}
		return nil
	}
	return &APIError{StatusCode: http.StatusNotFound, Message: fmt.Sprintf("environment %q of %s not found", environment, project)}
}

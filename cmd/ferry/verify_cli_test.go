package main

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
)

// TestVerifyCommand: ferry verify asks for a re-verification of an environment the Release rolled
// out to (the annotation the controller consumes, added to one already there), refuses one it
// did not reach, and ferry get releases shows verified, verifying and unverified.
func TestVerifyCommand(t *testing.T) {
	e := startCLIEnv(t)
	ctx := context.Background()
	c := e.admin
	releasetest.CreateCleanly(t, c, releasetest.Environment("dev", nil, "east"))
	releasetest.CreateCleanly(t, c, releasetest.Environment("prod", nil, "east"))
	if err := c.Create(ctx, releasetest.Project(e.ns, "shop", "dev", "prod")); err != nil {
		t.Fatal(err)
	}
	b := releasetest.CreateBuild(t, c, e.ns, "b1", "shop", "refs/heads/main", releasetest.Image("v1"), "dave", releasetest.Deploy(1, nil))
	rel := releasetest.Release(e.ns, "r1", "shop", b)
	if err := c.Create(ctx, rel); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	ready := metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "ok", LastTransitionTime: now}
	verified := metav1.Condition{Type: ferryv1.VerifiedCondition, Status: metav1.ConditionTrue, Reason: ferryv1.VerifiedReason, Message: "passed", LastTransitionTime: now}
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{
		{Name: "dev", Conditions: []metav1.Condition{ready, verified},
			Verification: &ferryv1.VerificationStatus{Run: 1, Image: rel.Spec.Image, VerifiedImage: rel.Spec.Image, StartTime: &now, CompletionTime: &now}},
		{Name: "prod", Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.RollingOutReason, Message: "verifying", LastTransitionTime: now}},
			Verification: &ferryv1.VerificationStatus{Run: 1, Image: rel.Spec.Image, StartTime: &now, Checks: []ferryv1.VerificationCheckStatus{
				{Name: "smoke", Source: ferryv1.EnvironmentCheck, Cluster: "east", Result: ferryv1.VerificationPassed},
				{Name: "e2e", Source: ferryv1.ApplicationCheck, Cluster: "east"},
			}}},
	}
	if err := c.Status().Update(ctx, rel); err != nil {
		t.Fatal(err)
	}
	out := e.mustFerry("bob", "get", "releases")
	if !strings.Contains(out, "dev:ok,verified prod:rolling-out,verifying(1/2)") {
		t.Errorf("get releases:\n%s", out)
	}

	if _, err := e.ferry("bob", "verify", "r1"); err == nil || !strings.Contains(err.Error(), "--environment is required") {
		t.Errorf("verify without an environment: %v", err)
	}
	if _, err := e.ferry("bob", "verify", "r1", "--environment", "prod"); err == nil || !strings.Contains(err.Error(), "has not rolled out to environment prod") {
		t.Errorf("verify of an environment not reached: %v", err)
	}
	if _, err := e.ferry("bob", "verify", "nope", "--environment", "dev"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("verify of a missing Release: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil {
		t.Fatal(err)
	}
	if _, ok := rel.Annotations[ferryv1.ReverifyAnnotation]; ok {
		t.Fatalf("a refused request left annotation %s", ferryv1.ReverifyAnnotation)
	}
	out = e.mustFerry("bob", "verify", "r1", "--environment", "dev")
	if !strings.Contains(out, "release/r1: verification in environment dev requested") {
		t.Errorf("verify printed %q", out)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil || rel.Annotations[ferryv1.ReverifyAnnotation] != "dev" {
		t.Errorf("annotations after verify: %v (%v)", rel.Annotations, err)
	}

	// A failed re-verification shows as unverified.
	rel.Status.Environments[0].Verification.VerifiedImage = ""
	rel.Status.Environments[0].Conditions[1].Status = metav1.ConditionFalse
	rel.Status.Environments[0].Conditions[1].Reason = ferryv1.VerificationFailedReason
	if err := c.Status().Update(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if out := e.mustFerry("bob", "get", "releases"); !strings.Contains(out, "dev:ok,unverified") {
		t.Errorf("get releases after a failed re-verification:\n%s", out)
	}
}

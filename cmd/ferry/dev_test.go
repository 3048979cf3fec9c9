//go:build !ferry_nodev

package main

import (
	"strings"
	"testing"
)

func TestDevCommands(t *testing.T) {
	dir := t.TempDir()
	out, err := runFerryOnHub(t, "dev", "push", "go-hello", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "is it running with --data-dir "+dir) {
		t.Errorf("ferry dev push without ferry dev: %v\n%s", err, out)
	}
	if _, err := runFerryOnHub(t, "dev", "push"); err == nil || !strings.Contains(err.Error(), "accepts 1 arg") {
		t.Errorf("ferry dev push without a project: %v", err)
	}
	if _, err := runFerryOnHub(t, "dev", "extra"); err == nil {
		t.Error("ferry dev with an argument was accepted")
	}
}

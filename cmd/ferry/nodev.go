//go:build ferry_nodev

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newDevCommand is `ferry dev` in the binary of Ferry's image, built with the ferry_nodev tag,
// which leaves out the registry server, the fake GitLab, the git server and the control plane that
// only ferry dev needs: the command is hidden and says where it went.
func newDevCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "dev",
		Short:              "Not in this binary: ferry dev needs the full ferry binary",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("this ferry binary is the one of Ferry's image (built with -tags ferry_nodev) and leaves out ferry dev; " +
				"build the full binary with make build or go build ./cmd/ferry")
		},
	}
}

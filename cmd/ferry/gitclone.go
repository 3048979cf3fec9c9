package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferryci/ferry/internal/gitsource"
)

func newGitCloneCommand() *cobra.Command {
	var req gitsource.Request
	var dir, credentialsDir string
	cmd := &cobra.Command{
		Use:   "git-clone --url URL --revision SHA --dir DIR",
		Short: "Check out one commit of a repository (the first step of every Build)",
		Long: `Fetch exactly one commit — shallow, by SHA — from the repository's clone URL and check it out into
DIR, with HEAD detached at the commit. Credentials come from a directory where the Project's Secret
is mounted: username and password for HTTPS, ssh-privatekey and known_hosts for SSH. file://, ext::,
local paths, and refs or SHAs that start with '-' are refused; redirects are not followed.

The git server is not trusted to answer, nor to answer in proportion: the clone fails when it takes
longer than --timeout, when the server sends nothing for --stall-timeout, and when it sends more
than --max-fetch-bytes (or its objects inflate to more than four times that).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if credentialsDir != "" {
				creds, err := gitsource.CredentialsFromDir(credentialsDir)
				if err != nil {
					return err
				}
				req.Credentials = creds
			}
			if err := gitsource.Checkout(cmd.Context(), req, dir); err != nil {
				if errors.Is(err, gitsource.ErrTooLarge) {
					return fmt.Errorf("%w (--max-fetch-bytes raises the limit)", err)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Checked out %s of %s into %s\n", req.Revision, req.URL, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.URL, "url", "", "the repository's clone URL (required)")
	f.StringVar(&req.Revision, "revision", "", "the commit SHA, 40 hex digits (required)")
	f.StringVar(&req.Ref, "ref", "", "the ref the commit was pushed to, fetched instead if the server cannot serve a commit by SHA")
	f.StringVar(&dir, "dir", "", "the directory to check out into; empty or missing (required)")
	f.StringVar(&credentialsDir, "credentials-dir", "", "a directory holding the clone credentials Secret's keys")
	f.DurationVar(&req.Limits.Timeout, "timeout", gitsource.CheckoutLimits.Timeout, "the longest the clone may take")
	f.DurationVar(&req.Limits.StallTimeout, "stall-timeout", gitsource.CheckoutLimits.StallTimeout, "fail when the git server sent nothing for this long")
	f.Int64Var(&req.Limits.MaxFetchBytes, "max-fetch-bytes", gitsource.CheckoutLimits.MaxFetchBytes, "the most the clone takes from the git server")
	for _, name := range []string{"url", "revision", "dir"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

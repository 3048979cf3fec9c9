package pipelinefile

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one problem in a pipeline file, at a place and a field.
type Error struct {
	// File is the file's path in the repository, for example .ferry.yaml.
	File string
	// Line and Column locate the offending value (or, for a missing field, its parent); 0 when
	// unknown.
	Line, Column int
	// Field is the field path, for example build.steps[0].name; empty for the whole file.
	Field string
	// Message says what is wrong and, where it helps, what would be right.
	Message string
}

// Error formats the problem as file:line:column: field: message.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ErrorList is every problem found in a pipeline file, in the order of the file.
type ErrorList []*Error

// maxErrors bounds how many problems one parse reports; the rest are summarised.
const maxErrors = 20

// Error formats the problems one per line.
func (l ErrorList) Error() string {
	lines := make([]string, 0, len(l)+1)
	for i, e := range l {
		if i == maxErrors {
			lines = append(lines, fmt.Sprintf("… and %d more problems", len(l)-maxErrors))
			break
		}
		lines = append(lines, e.Error())
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// IsInvalid reports whether err says that a pipeline file is missing or invalid (as opposed to,
// say, a failure to read it).
func IsInvalid(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

package transport

import (
	"errors"
	"strings"
)

// explained is a connection failure with its likely cause. Error never shows the password, even
// if a library ever put it into its message; Unwrap keeps errors.Is and errors.As working.
type explained struct {
	msg  string
	errs []error
}

func (e *explained) Error() string   { return e.msg }
func (e *explained) Unwrap() []error { return e.errs }

// redact replaces every occurrence of secret in s. It is applied to the messages that come from
// libraries and servers, not to our own wording, so that a short password cannot garble ours.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "***")
}

// masked returns err, or when its message holds secret, err with the secret masked: Explain's
// answer for an error it has no cause for.
func masked(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &explained{msg: redact(err.Error(), secret), errs: []error{err}}
}

// alreadyExplained reports whether err has been through an Explain already.
func alreadyExplained(err error) bool {
	var e *explained
	return errors.As(err, &e)
}

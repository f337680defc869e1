package config

import (
	"fmt"
	"strings"
)

// expand replaces ${NAME} with the value of the environment variable NAME and
// ${NAME:-default} with default when NAME is unset or empty. "$${" is a
// literal "${"; a "$" not followed by "{" is kept as is, so passwords with a
// dollar sign need no escaping. An unset NAME without a default is an error
// naming the variable: starting with an empty broker address or password is
// worse than not starting.
//
// Error messages never quote s: it may hold a secret.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated \"${\": write ${NAME}, or $${ for a literal \"${\"")
			}
			name, def, hasDef := strings.Cut(s[i+2:i+2+end], ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("invalid environment variable name %q in ${...}", name)
			}
			val, ok := lookup(name)
			if !ok || (hasDef && val == "") {
				if !hasDef {
					return "", fmt.Errorf("%w: %s (set it, or write ${%s:-default})", ErrEnvNotSet, name, name)
				}
				val = def
			}
			b.WriteString(val)
			i += 2 + end + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

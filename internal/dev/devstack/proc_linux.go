package devstack

import "syscall"

// childAttr makes a child process die with the process that started it, so
// that a test killed on its timeout leaves no broker running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// pause is the pod sandbox process of the local test node (image berth.local/pause:3.10): it holds the pod's
// namespaces open, reaps zombies (it is PID 1 when the pod shares its process namespace) and exits 0 on
// SIGTERM or SIGINT. Built by e2e/images.sh with CGO_ENABLED=0 into a static binary.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	reap() // children inherited before Notify was set up
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child; SIGCHLDs coalesce, so one signal may stand for many children.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// receive is a webhook receiver for trying notifications and hooks on the
// test bed: it prints each request it gets (a notification in one line)
// and answers 200. It listens on 127.0.0.1 only.
func receive(args []string) error {
	addr := "127.0.0.1:9999"
	if len(args) > 0 {
		addr = args[0]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || (host != "127.0.0.1" && host != "localhost") {
		return fmt.Errorf("receive listens on 127.0.0.1 only: give 127.0.0.1:PORT, not %q", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("testbed: receiving webhooks at http://%s (Ctrl-C stops)\n", l.Addr())
	srv := &http.Server{Handler: receiver(os.Stdout, time.Now), ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; _ = srv.Close() }()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// receiver prints a splitter notification (schema
// splitter.dev/notification/v1) or hook call (splitter.dev/hook/v1) in one
// line, anything else as it came.
func receiver(out io.Writer, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var m struct {
			Schema, Event, Reason, Message, Split, Namespace, Hook, Point, Token string
			Step                                                                 int
		}
		stamp := now().Format("15:04:05")
		switch err := json.Unmarshal(body, &m); {
		case err == nil && m.Schema == "splitter.dev/notification/v1":
			fmt.Fprintf(out, "%s %s/%s %s (%s): %s\n", stamp, m.Namespace, m.Split, m.Event, m.Reason, m.Message)
		case err == nil && m.Schema == "splitter.dev/hook/v1":
			fmt.Fprintf(out, "%s %s/%s hook %s at %s step %d (token %s): answered 200\n", stamp, m.Namespace, m.Split, m.Hook, m.Point, m.Step, m.Token)
		default:
			fmt.Fprintf(out, "%s %s %s: %s\n", stamp, r.Method, r.URL.Path, body)
		}
		w.WriteHeader(http.StatusOK)
	})
}

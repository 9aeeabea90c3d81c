package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/server"
)

// SocketGroup is the group given the API socket when it exists (DESIGN.md §7).
const SocketGroup = "adeagent"

// apiHandle is the running socket API.
type apiHandle struct {
	socket string
	stop   context.CancelFunc
	done   chan error
}

// startAPI listens on socket and serves b there until shutdown. The socket answers as soon
// as this returns; the server answers 503 while b.Report() is nil.
func startAPI(ctx context.Context, b server.Backend, socket, operatorGroup string, log *zap.Logger) (*apiHandle, error) {
	ln, err := server.Listen(socket, SocketGroup)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	srv := server.New(b, server.Options{Logger: log.Named("api"), OperatorGroup: operatorGroup})
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h := &apiHandle{socket: socket, stop: stop, done: make(chan error, 1)}
	go func() {
		err := srv.Serve(sctx, ln)
		if err != nil && sctx.Err() == nil {
			log.Error("the API server stopped", zap.Error(err))
		}
		h.done <- err
	}()
	return h, nil
}

// shutdown stops accepting, ends long polls and streams, waits for the requests in flight
// (within ctx) and makes sure the socket file is gone.
func (h *apiHandle) shutdown(ctx context.Context) error {
	h.stop()
	var err error
	select {
	case err = <-h.done:
	case <-ctx.Done():
		err = fmt.Errorf("API shutdown: %w", ctx.Err())
	}
	// Closing the listener unlinks the socket; remove it here too in case Serve never ran.
	if fi, lerr := os.Lstat(h.socket); lerr == nil && fi.Mode().Type() == os.ModeSocket {
		if rerr := os.Remove(h.socket); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = fmt.Errorf("remove the socket: %w", rerr)
		}
	}
	return err
}

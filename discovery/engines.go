package discovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Engine names, as logged.
const (
	engineDocker     = "docker"
	enginePodman     = "podman"
	engineContainerd = "containerd"
	engineCRI        = "cri"
)

// mobyNamespace is the containerd namespace in which Docker keeps its
// containers, under their Docker IDs.
const mobyNamespace = "moby"

// CRI labels, set on the containers of Kubernetes pods by containerd's CRI
// plugin and by cri-dockerd.
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
	// containerd's CRI plugin: "sandbox" or "container".
	labelCRIKind = "io.cri-containerd.kind"
	// cri-dockerd (and the former dockershim): "podsandbox" or "container".
	labelDockerKind = "io.kubernetes.docker.type"
)

// errEngineAbsent: nothing listens at the engine's socket. That is the
// normal case on a host without that engine, so it is logged at debug only.
var errEngineAbsent = errors.New("container engine absent")

// listFunc lists the running containers of the engine at addr.
type listFunc func(ctx context.Context, addr string) ([]engineContainer, error)

// runEngine lists an engine's containers within EngineTimeout. Failures are
// logged, not returned: the listing goes on without that engine.
func (d *Discoverer) runEngine(ctx context.Context, engine, addr string, list listFunc) []engineContainer {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.EngineTimeout)
	defer cancel()
	start := time.Now()
	cs, err := list(ctx, addr)
	log := d.log.With(zap.String("engine", engine), zap.String("address", addr))
	switch {
	case err == nil:
		log.Debug("container engine listed", zap.Int("containers", len(cs)), zap.Duration("took", time.Since(start)))
		return cs
	case errors.Is(err, errEngineAbsent):
		log.Debug("container engine absent, skipped", zap.Error(err))
	case ctx.Err() != nil:
		// The clients do not always keep the ctx error in their chain
		// (moby reports a deadline as "cannot connect"), so say it here.
		log.Warn("container engine skipped: no answer in time",
			zap.Duration("timeout", d.cfg.EngineTimeout), zap.NamedError("ctx", ctx.Err()), zap.Error(err))
	default:
		log.Warn("container engine skipped", zap.Duration("took", time.Since(start)), zap.Error(err))
	}
	return nil
}

// probeUnix connects to the unix socket at path once, so that a missing
// socket or one nobody listens on (a stale file of a stopped engine) counts
// as an absent engine: the clients report both like any other failure, and
// the gRPC client only connects lazily.
func probeUnix(ctx context.Context, path string) error {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %w", errEngineAbsent, err)
		}
		return err
	}
	return c.Close()
}

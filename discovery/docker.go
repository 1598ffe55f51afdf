package discovery

import (
	"context"
	"fmt"
	"strings"

	docker "github.com/moby/moby/client"
)

// listDocker lists the running containers of the Docker engine at host
// (DOCKER_HOST syntax). Containers of Kubernetes pods run through
// cri-dockerd become pod entries.
func listDocker(ctx context.Context, host string) ([]engineContainer, error) {
	return listMoby(ctx, engineDocker, TypeDocker, host)
}

// listPodman lists the running containers of Podman through its
// Docker-compatible API at host. That API answers the moby client as a
// Docker engine of API 1.41 would (Podman 4.3), with State.Pid the
// container's init process, as Docker's.
func listPodman(ctx context.Context, host string) ([]engineContainer, error) {
	return listMoby(ctx, enginePodman, TypePodman, host)
}

// listMoby lists the running containers of the engine with a Docker API
// at host, as type typ. Containers with the CRI pod labels become pod
// entries.
func listMoby(ctx context.Context, engine, typ, host string) ([]engineContainer, error) {
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		if err := probeUnix(ctx, path); err != nil {
			return nil, err
		}
	}
	// v0.6.2 negotiates the API version by default, which lets it speak to
	// older engines (Debian 12's dockerd 20.10 and Podman 4.3 have 1.41).
	cli, err := docker.New(docker.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("%s client for %s: %w", engine, host, err)
	}
	defer cli.Close()

	// Running (and paused) containers only: the others have no process and
	// so no netns.
	list, err := cli.ContainerList(ctx, docker.ContainerListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s list containers: %w", engine, err)
	}
	out := make([]engineContainer, 0, len(list.Items))
	for _, s := range list.Items {
		// The list has no PID; inspect has.
		res, err := cli.ContainerInspect(ctx, s.ID, docker.ContainerInspectOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s inspect %s: %w", engine, s.ID, err)
			}
			// Removed since the list.
			continue
		}
		c := res.Container
		if c.State == nil || c.State.Pid <= 0 {
			continue
		}
		ec := engineContainer{Type: typ, Name: strings.TrimPrefix(c.Name, "/"), ID: c.ID, PID: c.State.Pid}
		if c.Config != nil {
			if ns, name := c.Config.Labels[labelPodNamespace], c.Config.Labels[labelPodName]; ns != "" && name != "" {
				ec.Type, ec.Name = TypePod, ns+"/"+name
				ec.Sandbox = c.Config.Labels[labelDockerKind] == "podsandbox"
			}
		}
		out = append(out, ec)
	}
	return out, nil
}

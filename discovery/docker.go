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
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		if err := probeUnix(ctx, path); err != nil {
			return nil, err
		}
	}
	// v0.6.2 negotiates the API version by default, which lets it speak to
	// older engines (Debian 12's dockerd 20.10 has 1.41).
	cli, err := docker.New(docker.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	defer cli.Close()

	// Running (and paused) containers only: the others have no process and
	// so no netns.
	list, err := cli.ContainerList(ctx, docker.ContainerListOptions{})
	if err != nil {
		return nil, fmt.Errorf("docker list containers: %w", err)
	}
	out := make([]engineContainer, 0, len(list.Items))
	for _, s := range list.Items {
		// The list has no PID; inspect has.
		res, err := cli.ContainerInspect(ctx, s.ID, docker.ContainerInspectOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("docker inspect %s: %w", s.ID, err)
			}
			// Removed since the list.
			continue
		}
		c := res.Container
		if c.State == nil || c.State.Pid <= 0 {
			continue
		}
		ec := engineContainer{Type: TypeDocker, Name: strings.TrimPrefix(c.Name, "/"), ID: c.ID, PID: c.State.Pid}
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

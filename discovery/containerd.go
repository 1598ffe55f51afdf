package discovery

import (
	"context"
	"fmt"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// listContainerd lists the containers with a running (or paused) task in
// every namespace of the containerd at the unix socket path. Containers
// with CRI pod labels become pod entries, named "namespace/pod"; the
// others are named "namespace/containerID", which is unique per containerd
// and what ctr shows (`ctr -n NAMESPACE task ls`).
func listContainerd(ctx context.Context, path string) ([]engineContainer, error) {
	if err := probeUnix(ctx, path); err != nil {
		return nil, err
	}
	// WithTimeout bounds the gRPC connection attempts; ctx bounds the calls.
	cli, err := containerd.New(path, containerd.WithTimeout(timeoutOf(ctx)))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", path, err)
	}
	defer cli.Close()

	nss, err := cli.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("containerd list namespaces: %w", err)
	}
	var out []engineContainer
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		// One call for all tasks of the namespace instead of one per
		// container: the task has the PID and state.
		ts, err := cli.TaskService().List(nctx, &tasks.ListTasksRequest{})
		if err != nil {
			return nil, fmt.Errorf("containerd list tasks in namespace %s: %w", ns, err)
		}
		pids := map[string]uint32{}
		for _, t := range ts.GetTasks() {
			switch t.GetStatus() {
			case task.Status_RUNNING, task.Status_PAUSED, task.Status_PAUSING:
				// containerd 1.x fills in only ID (the container's ID, as
				// a task is its container's init process); 2.x also sets
				// ContainerID.
				id := t.GetContainerID()
				if id == "" {
					id = t.GetID()
				}
				if t.GetPid() > 0 {
					pids[id] = t.GetPid()
				}
			}
		}
		if len(pids) == 0 {
			continue
		}
		cs, err := cli.ContainerService().List(nctx)
		if err != nil {
			return nil, fmt.Errorf("containerd list containers in namespace %s: %w", ns, err)
		}
		for _, c := range cs {
			pid, ok := pids[c.ID]
			if !ok {
				continue
			}
			ec := engineContainer{Type: TypeContainerd, Name: ns + "/" + c.ID, ID: c.ID, Namespace: ns, PID: int(pid)}
			if pns, name := c.Labels[labelPodNamespace], c.Labels[labelPodName]; pns != "" && name != "" {
				ec.Type, ec.Name = TypePod, pns+"/"+name
				ec.Sandbox = c.Labels[labelCRIKind] == "sandbox"
			}
			out = append(out, ec)
		}
	}
	return out, nil
}

// timeoutOf returns the time left until ctx's deadline, or 0 (the client's
// default) without one.
func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 0
}

package discovery

import (
	"context"
	"fmt"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	nsapi "github.com/containerd/containerd/api/services/namespaces/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
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
	// The API's own gRPC clients, not containerd's client package: that
	// one links image, transfer, sandbox and tracing code (and with them
	// otel and distribution/reference) for the three List calls made here,
	// about 1 MB of idle RSS. NewClient connects lazily, within ctx; the
	// namespace travels as containerd's "containerd-namespace" metadata;
	// 16 MiB is the limit containerd's own client sets for answers.
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", path, err)
	}
	defer conn.Close()
	nsr, err := nsapi.NewNamespacesClient(conn).List(ctx, &nsapi.ListNamespacesRequest{})
	if err != nil {
		return nil, fmt.Errorf("containerd list namespaces: %w", err)
	}
	var out []engineContainer
	for _, n := range nsr.GetNamespaces() {
		ns := n.GetName()
		nctx := metadata.AppendToOutgoingContext(ctx, "containerd-namespace", ns)
		// One call for all tasks of the namespace instead of one per
		// container: the task has the PID and state.
		ts, err := tasks.NewTasksClient(conn).List(nctx, &tasks.ListTasksRequest{})
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
		cr, err := containers.NewContainersClient(conn).List(nctx, &containers.ListContainersRequest{})
		if err != nil {
			return nil, fmt.Errorf("containerd list containers in namespace %s: %w", ns, err)
		}
		for _, c := range cr.GetContainers() {
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

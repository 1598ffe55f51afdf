package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criMaxMessage is the largest gRPC answer accepted from a CRI runtime:
// kubelet's limit (16 MiB), as a node's container list comes close to the
// gRPC default of 4 MiB only on very large nodes, but must not fail there.
const criMaxMessage = 16 << 20

// listCRI lists the ready pod sandboxes and the running containers of the
// CRI runtime at the unix socket path (a "unix://" prefix, as kubelet's
// --container-runtime-endpoint spells it, is accepted). Each pod gives a
// pod entry named "namespace/name" from its CRI metadata, for its sandbox
// (Sandbox set) and for each of its running containers, so that every
// init process of the pod maps to the pod, whichever the merge keeps.
//
// The PIDs come from the verbose status's "info" JSON, which is not part
// of the CRI API proper but which containerd (1.6 and later) and CRI-O
// both fill in with a "pid" field. A sandbox without one (CRI-O without
// an infra container holds the pod's netns by a bind mount only) is left
// out; its containers still name the pod.
func listCRI(ctx context.Context, path string) ([]engineContainer, error) {
	path = strings.TrimPrefix(path, "unix://")
	if err := probeUnix(ctx, path); err != nil {
		return nil, err
	}
	// NewClient connects lazily, on the first call, which ctx bounds.
	conn, err := grpc.NewClient("unix:"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(criMaxMessage)))
	if err != nil {
		return nil, fmt.Errorf("cri client for %s: %w", path, err)
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)

	pods, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{
		State: &cri.PodSandboxStateValue{State: cri.PodSandboxState_SANDBOX_READY},
	}})
	if err != nil {
		return nil, fmt.Errorf("cri list pod sandboxes: %w", err)
	}
	var out []engineContainer
	names := map[string]string{} // sandbox ID → "namespace/name"
	for _, p := range pods.GetItems() {
		// The filter is the runtime's to apply; do not rely on it.
		md := p.GetMetadata()
		if p.GetState() != cri.PodSandboxState_SANDBOX_READY || md.GetName() == "" {
			continue
		}
		name := md.GetNamespace() + "/" + md.GetName()
		names[p.GetId()] = name
		st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: p.GetId(), Verbose: true})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("cri pod sandbox status %s: %w", p.GetId(), err)
			}
			// Removed since the list.
			continue
		}
		if pid := infoPID(st.GetInfo()); pid > 0 {
			out = append(out, engineContainer{Type: TypePod, Name: name, ID: p.GetId(), PID: pid, Sandbox: true})
		}
	}
	if len(names) == 0 {
		return out, nil
	}

	cs, err := rs.ListContainers(ctx, &cri.ListContainersRequest{Filter: &cri.ContainerFilter{
		State: &cri.ContainerStateValue{State: cri.ContainerState_CONTAINER_RUNNING},
	}})
	if err != nil {
		return nil, fmt.Errorf("cri list containers: %w", err)
	}
	for _, c := range cs.GetContainers() {
		name, ok := names[c.GetPodSandboxId()]
		if !ok || c.GetState() != cri.ContainerState_CONTAINER_RUNNING {
			continue
		}
		st, err := rs.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: c.GetId(), Verbose: true})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("cri container status %s: %w", c.GetId(), err)
			}
			continue
		}
		if pid := infoPID(st.GetInfo()); pid > 0 {
			out = append(out, engineContainer{Type: TypePod, Name: name, ID: c.GetId(), PID: pid})
		}
	}
	return out, nil
}

// infoPID returns the "pid" field of the JSON under "info" in a verbose
// CRI status, or 0 when there is none or it does not parse.
func infoPID(info map[string]string) int {
	var v struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil {
		return 0
	}
	return v.PID
}

package discovery

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI serves the four RuntimeService methods listCRI calls, from
// fixed pods and containers. It ignores the list filters, so the client's
// own checks are tested too. Status of an ID missing from info answers
// NotFound, as for a pod or container removed since the list.
type fakeCRI struct {
	cri.UnimplementedRuntimeServiceServer
	pods       []*cri.PodSandbox
	containers []*cri.Container
	info       map[string]string // ID → verbose "info" JSON
}

func (f *fakeCRI) ListPodSandbox(context.Context, *cri.ListPodSandboxRequest) (*cri.ListPodSandboxResponse, error) {
	return &cri.ListPodSandboxResponse{Items: f.pods}, nil
}

func (f *fakeCRI) PodSandboxStatus(_ context.Context, r *cri.PodSandboxStatusRequest) (*cri.PodSandboxStatusResponse, error) {
	info, ok := f.info[r.GetPodSandboxId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find sandbox %q", r.GetPodSandboxId())
	}
	resp := &cri.PodSandboxStatusResponse{Status: &cri.PodSandboxStatus{Id: r.GetPodSandboxId()}}
	if r.GetVerbose() {
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

func (f *fakeCRI) ListContainers(context.Context, *cri.ListContainersRequest) (*cri.ListContainersResponse, error) {
	return &cri.ListContainersResponse{Containers: f.containers}, nil
}

func (f *fakeCRI) ContainerStatus(_ context.Context, r *cri.ContainerStatusRequest) (*cri.ContainerStatusResponse, error) {
	info, ok := f.info[r.GetContainerId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find container %q", r.GetContainerId())
	}
	resp := &cri.ContainerStatusResponse{Status: &cri.ContainerStatus{Id: r.GetContainerId()}}
	if r.GetVerbose() {
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

// serveCRI serves srv (nil: a gRPC server without RuntimeService) on a
// unix socket until the test ends, and returns the socket's path.
func serveCRI(t *testing.T, srv cri.RuntimeServiceServer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	if srv != nil {
		cri.RegisterRuntimeServiceServer(g, srv)
	}
	done := make(chan struct{})
	go func() {
		// Owned by the test: cleanup stops the server and waits.
		defer close(done)
		g.Serve(l)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return path
}

func fakePod(id, ns, name string, state cri.PodSandboxState) *cri.PodSandbox {
	return &cri.PodSandbox{Id: id, State: state, Metadata: &cri.PodSandboxMetadata{Namespace: ns, Name: name, Uid: "u-" + id}}
}

func fakeCtr(id, sandbox string, state cri.ContainerState) *cri.Container {
	return &cri.Container{Id: id, PodSandboxId: sandbox, State: state, Metadata: &cri.ContainerMetadata{Name: "c-" + id}}
}

func Test_listCRI(t *testing.T) {
	const (
		ready    = cri.PodSandboxState_SANDBOX_READY
		notReady = cri.PodSandboxState_SANDBOX_NOTREADY
		running  = cri.ContainerState_CONTAINER_RUNNING
		exited   = cri.ContainerState_CONTAINER_EXITED
	)
	for _, tc := range []struct {
		name string
		srv  *fakeCRI
		want []engineContainer
	}{
		{
			name: "containerd pod",
			// containerd 1.6: "pid" next to much else, runtimeSpec included.
			srv: &fakeCRI{
				pods: []*cri.PodSandbox{fakePod("s1", "default", "web", ready)},
				containers: []*cri.Container{
					fakeCtr("c1", "s1", running), fakeCtr("c2", "s1", running), fakeCtr("c3", "s1", exited),
				},
				info: map[string]string{
					"s1": `{"pid":100,"processStatus":"running","netNamespaceClosed":false,"runtimeSpec":{"ociVersion":"1.0.2"}}`,
					"c1": `{"sandboxID":"s1","pid":101,"removing":false}`,
					"c2": `{"sandboxID":"s1","pid":102,"removing":false}`,
					"c3": `{"sandboxID":"s1","pid":0}`,
				},
			},
			want: []engineContainer{
				{Type: TypePod, Name: "default/web", ID: "s1", PID: 100, Sandbox: true},
				{Type: TypePod, Name: "default/web", ID: "c1", PID: 101},
				{Type: TypePod, Name: "default/web", ID: "c2", PID: 102},
			},
		},
		{
			name: "pod not ready",
			srv: &fakeCRI{
				pods:       []*cri.PodSandbox{fakePod("s1", "default", "gone", notReady), fakePod("s2", "kube-system", "dns", ready)},
				containers: []*cri.Container{fakeCtr("c1", "s1", running), fakeCtr("c2", "s2", running)},
				info:       map[string]string{"s1": `{"pid":100}`, "c1": `{"pid":101}`, "s2": `{"pid":200}`, "c2": `{"pid":201}`},
			},
			want: []engineContainer{
				{Type: TypePod, Name: "kube-system/dns", ID: "s2", PID: 200, Sandbox: true},
				{Type: TypePod, Name: "kube-system/dns", ID: "c2", PID: 201},
			},
		},
		{
			name: "sandbox without a process",
			// CRI-O with drop_infra_ctr: no pause process, the pod's netns
			// is a bind mount that its containers join.
			srv: &fakeCRI{
				pods:       []*cri.PodSandbox{fakePod("s1", "default", "web", ready)},
				containers: []*cri.Container{fakeCtr("c1", "s1", running)},
				info:       map[string]string{"s1": `{"runtimeSpec":{}}`, "c1": `{"sandboxID":"s1","pid":101,"runtimeSpec":{},"privileged":false}`},
			},
			want: []engineContainer{{Type: TypePod, Name: "default/web", ID: "c1", PID: 101}},
		},
		{
			name: "removed since the list",
			srv: &fakeCRI{
				pods:       []*cri.PodSandbox{fakePod("s1", "default", "web", ready), fakePod("s2", "default", "db", ready)},
				containers: []*cri.Container{fakeCtr("c1", "s1", running), fakeCtr("c2", "s2", running)},
				info:       map[string]string{"s2": `{"pid":200}`, "c1": `{"pid":101}`},
			},
			want: []engineContainer{
				{Type: TypePod, Name: "default/db", ID: "s2", PID: 200, Sandbox: true},
				{Type: TypePod, Name: "default/web", ID: "c1", PID: 101},
			},
		},
		{
			name: "info that does not parse",
			srv: &fakeCRI{
				pods:       []*cri.PodSandbox{fakePod("s1", "default", "web", ready)},
				containers: []*cri.Container{fakeCtr("c1", "s1", running), fakeCtr("c2", "s1", running)},
				info:       map[string]string{"s1": `not json`, "c1": `{"pid":"101"}`, "c2": `{"pid":102}`},
			},
			want: []engineContainer{{Type: TypePod, Name: "default/web", ID: "c2", PID: 102}},
		},
		{
			name: "no pods",
			srv:  &fakeCRI{containers: []*cri.Container{fakeCtr("c1", "s1", running)}, info: map[string]string{"c1": `{"pid":101}`}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := serveCRI(t, tc.srv)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := listCRI(ctx, "unix://"+path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("listCRI:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}

	t.Run("absent", func(t *testing.T) {
		_, err := listCRI(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
		if !errors.Is(err, errEngineAbsent) {
			t.Fatalf("listCRI of a missing socket: %v, want errEngineAbsent", err)
		}
	})
	t.Run("not a CRI runtime", func(t *testing.T) {
		path := serveCRI(t, nil)
		_, err := listCRI(context.Background(), path)
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("listCRI of a server without RuntimeService: %v, want Unimplemented", err)
		}
	})
}

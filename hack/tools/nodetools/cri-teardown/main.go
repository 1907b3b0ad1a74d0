// Command cri-teardown stops and removes every pod sandbox (and so every container) a CRI runtime
// holds, so that the runtime releases the pods' network namespaces, mounts, cgroups and CNI
// state before it is stopped. crictl does the same; it is not packaged where the local real
// node is built, so this is the part of it that the node's shutdown needs.
//
//	cri-teardown unix:///run/containerd/containerd.sock
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cri-teardown unix:///path/to/runtime.sock")
		os.Exit(2)
	}
	if err := teardown(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "cri-teardown:", err)
		os.Exit(1)
	}
}

func teardown(endpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := runtime.NewRuntimeServiceClient(conn)

	sandboxes, err := client.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("listing pod sandboxes: %w", err)
	}
	failed := 0
	for _, sandbox := range sandboxes.Items {
		name := sandbox.Metadata.Namespace + "/" + sandbox.Metadata.Name
		// Stopping kills the containers and runs the CNI DEL; removing frees the rest.
		if _, err := client.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: sandbox.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "stopping %s: %v\n", name, err)
			failed++
			continue
		}
		if _, err := client.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: sandbox.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "removing %s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Printf("removed pod %s\n", name)
	}
	// Containers whose sandbox is already gone would otherwise keep their mounts.
	containers, err := client.ListContainers(ctx, &runtime.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	for _, container := range containers.Containers {
		if _, err := client.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: container.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "removing container %s: %v\n", container.Id, err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d pods or containers could not be removed", failed)
	}
	return nil
}

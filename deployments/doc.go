// Package deployments holds the container image and Kubernetes manifests; its test checks them against the service.
package deployments

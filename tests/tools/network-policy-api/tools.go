//go:build tools

package tools

import (
	_ "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// kstatus-check: reads one Kubernetes object (JSON or YAML) on stdin and prints what kstatus
// (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library Flux, kpt and cli-utils use to wait
// for resources, makes of it: {"status": "Current", "message": "..."}. Exits with 2 and a
// message on stderr when the input is not an object.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	document, err := yaml.YAMLToJSON(input)
	if err != nil {
		fail("stdin is not a JSON or YAML object: %v", err)
	}
	// Unstructured's own decoding keeps integers as int64, as kstatus expects of generations.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(document); err != nil {
		fail("stdin is not a Kubernetes object (apiVersion and kind are required): %v", err)
	}
	result, err := status.Compute(u)
	if err != nil {
		fail("kstatus could not judge %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	out, err := json.Marshal(verdict{Status: result.Status.String(), Message: result.Message, Conditions: result.Conditions})
	if err != nil {
		fail("encoding the verdict: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus-check: "+format+"\n", args...)
	os.Exit(2)
}

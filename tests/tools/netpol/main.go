// Command netpol-verdict judges connections with the policy evaluation code of
// sigs.k8s.io/kube-network-policies, so that tests without a CNI can tell which pods may
// talk to which. It reads a scenario (namespaces, pods, NetworkPolicies,
// AdminNetworkPolicies, BaselineAdminNetworkPolicies and connections) as JSON on stdin
// and prints one verdict per connection as JSON on stdout.
//
// The objects go into the informer stores of a kube-network-policies Controller, as the
// module's own tests do, and each connection is judged by the Controller's packet
// evaluation (see evaluate.go): egress of the source pod, then ingress of the destination
// pod, with AdminNetworkPolicies first and BaselineAdminNetworkPolicies last. No dataplane
// runs and no API server is contacted.
//
// Exit status: 0 with verdicts, 2 when the input is not a valid scenario, 1 otherwise.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
	npav1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	npainformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"

	"github.com/sirupsen/logrus"
)

// Scenario is the input document.
type Scenario struct {
	Namespaces []Namespace `json:"namespaces"`
	Pods       []Pod       `json:"pods"`
	// Objects as the API server returns them. Fields the API server defaults are
	// defaulted the same way when they are missing (see defaultNetworkPolicy).
	NetworkPolicies              []networkingv1.NetworkPolicy             `json:"networkPolicies"`
	AdminNetworkPolicies         []npav1alpha1.AdminNetworkPolicy         `json:"adminNetworkPolicies"`
	BaselineAdminNetworkPolicies []npav1alpha1.BaselineAdminNetworkPolicy `json:"baselineAdminNetworkPolicies"`
	// Refused: the pinned kube-network-policies (v0.8.0) does not evaluate them.
	ClusterNetworkPolicies []json.RawMessage `json:"clusterNetworkPolicies,omitempty"`
	Connections            []Connection      `json:"connections"`
}

// Namespace is a namespace and its labels. The API server's
// kubernetes.io/metadata.name label is added when missing.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Pod is a running pod with one IP. Ports are only needed for named ports in policies.
type Pod struct {
	Namespace string             `json:"namespace"`
	Name      string             `json:"name"`
	Labels    map[string]string  `json:"labels,omitempty"`
	IP        string             `json:"ip"`
	Ports     []v1.ContainerPort `json:"ports,omitempty"`
}

// Endpoint is one end of a connection: a pod of the scenario ("namespace/name") or an IP.
// An IP that a pod of the scenario has is that pod, as it is for the dataplane.
type Endpoint struct {
	Pod string `json:"pod,omitempty"`
	IP  string `json:"ip,omitempty"`
}

// Connection is the first packet of a connection. Protocol defaults to TCP.
type Connection struct {
	From     Endpoint    `json:"from"`
	To       Endpoint    `json:"to"`
	Protocol v1.Protocol `json:"protocol,omitempty"`
	Port     int         `json:"port"`
}

// Verdict is a connection and whether kube-network-policies lets it through.
type Verdict struct {
	Connection
	Allowed bool `json:"allowed"`
}

// Output is the output document: one verdict per connection, in the input's order.
type Output struct {
	Verdicts []Verdict `json:"verdicts"`
}

// The source port of every connection. NetworkPolicies and AdminNetworkPolicies match
// destination ports only, so its value does not change a verdict.
const sourcePort = 40000

// inputError is an input that is not a valid scenario (exit status 2).
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func badInput(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

func main() {
	err := run(os.Stdin, os.Stdout)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "netpol-verdict: %v\n", err)
	var bad *inputError
	if errors.As(err, &bad) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(in io.Reader, out io.Writer) error {
	scenario, err := decode(in)
	if err != nil {
		return err
	}
	verdicts, err := Judge(scenario)
	if err != nil {
		return err
	}
	encoded, err := json.MarshalIndent(Output{Verdicts: verdicts}, "", "  ")
	if err != nil {
		return err
	}
	_, err = out.Write(append(encoded, '\n'))
	return err
}

func decode(in io.Reader) (*Scenario, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var scenario Scenario
	if err := dec.Decode(&scenario); err != nil {
		return nil, badInput("the scenario is not valid JSON of the expected shape: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badInput("the scenario is followed by more data")
	}
	if len(scenario.ClusterNetworkPolicies) > 0 {
		return nil, badInput("clusterNetworkPolicies: kube-network-policies v0.8.0 evaluates AdminNetworkPolicies and BaselineAdminNetworkPolicies (policy.networking.k8s.io/v1alpha1), not ClusterNetworkPolicies; use adminNetworkPolicies and baselineAdminNetworkPolicies")
	}
	return &scenario, nil
}

// Judge returns the verdict of kube-network-policies for each connection of the scenario.
func Judge(s *Scenario) ([]Verdict, error) {
	namespaces, pods, podList, err := objects(s)
	if err != nil {
		return nil, err
	}
	policies, err := networkPolicies(s, namespaces)
	if err != nil {
		return nil, err
	}
	for i, anp := range s.AdminNetworkPolicies {
		if anp.Name == "" {
			return nil, badInput("adminNetworkPolicies[%d]: metadata.name is empty", i)
		}
	}
	for i, banp := range s.BaselineAdminNetworkPolicies {
		if banp.Name == "" {
			return nil, badInput("baselineAdminNetworkPolicies[%d]: metadata.name is empty", i)
		}
	}
	type judged struct {
		src, dst net.IP
		proto    v1.Protocol
	}
	connections := make([]judged, len(s.Connections))
	for i := range s.Connections {
		c := &s.Connections[i]
		if c.Protocol == "" {
			c.Protocol = v1.ProtocolTCP
		}
		switch c.Protocol {
		case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		default:
			return nil, badInput("connections[%d]: protocol %q is not TCP, UDP or SCTP", i, c.Protocol)
		}
		if c.Port < 1 || c.Port > 65535 {
			return nil, badInput("connections[%d]: port %d is not between 1 and 65535", i, c.Port)
		}
		src, err := resolve(c.From, pods)
		if err != nil {
			return nil, badInput("connections[%d].from: %v", i, err)
		}
		dst, err := resolve(c.To, pods)
		if err != nil {
			return nil, badInput("connections[%d].to: %v", i, err)
		}
		if (src.To4() == nil) != (dst.To4() == nil) {
			return nil, badInput("connections[%d]: from %s to %s mixes IPv4 and IPv6", i, src, dst)
		}
		connections[i] = judged{src: src, dst: dst, proto: c.Protocol}
	}

	// The NRI plugin that NewController creates (and never connects, as Run is not called)
	// announces itself through logrus; stderr is for errors.
	logrus.SetLevel(logrus.WarnLevel)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://netpol-verdict.invalid", Transport: noAPIServer{}})
	if err != nil {
		return nil, err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	// The NetworkPolicy API client is only kept by the Controller; the informers are never
	// started, so neither client is ever used.
	npaFactory := npainformers.NewSharedInformerFactory(nil, 0)
	controller, err := networkpolicy.NewController(
		client,
		factory.Networking().V1().NetworkPolicies(),
		factory.Core().V1().Namespaces(),
		factory.Core().V1().Pods(),
		factory.Core().V1().Nodes(),
		nil,
		npaFactory.Policy().V1alpha1().AdminNetworkPolicies(),
		npaFactory.Policy().V1alpha1().BaselineAdminNetworkPolicies(),
		networkpolicy.Config{
			AdminNetworkPolicy:         true,
			BaselineAdminNetworkPolicy: true,
			NodeName:                   "netpol-verdict",
		},
	)
	if err != nil {
		return nil, fmt.Errorf("create the kube-network-policies controller: %w", err)
	}

	// The same shared informers the Controller was given: their stores are its listers'.
	add := func(store interface{ Add(any) error }, obj any) error {
		if err := store.Add(obj); err != nil {
			return fmt.Errorf("add %T to the informer store: %w", obj, err)
		}
		return nil
	}
	for _, ns := range namespaces {
		if err := add(factory.Core().V1().Namespaces().Informer().GetStore(), ns); err != nil {
			return nil, err
		}
	}
	for _, pod := range podList {
		if err := add(factory.Core().V1().Pods().Informer().GetStore(), pod); err != nil {
			return nil, err
		}
	}
	for _, np := range policies {
		if err := add(factory.Networking().V1().NetworkPolicies().Informer().GetStore(), np); err != nil {
			return nil, err
		}
	}
	for i := range s.AdminNetworkPolicies {
		if err := add(npaFactory.Policy().V1alpha1().AdminNetworkPolicies().Informer().GetStore(), &s.AdminNetworkPolicies[i]); err != nil {
			return nil, err
		}
	}
	for i := range s.BaselineAdminNetworkPolicies {
		if err := add(npaFactory.Policy().V1alpha1().BaselineAdminNetworkPolicies().Informer().GetStore(), &s.BaselineAdminNetworkPolicies[i]); err != nil {
			return nil, err
		}
	}

	verdicts := make([]Verdict, len(connections))
	for i, c := range connections {
		allowed, err := evaluateConnection(controller, c.src, sourcePort, c.dst, s.Connections[i].Port, c.proto)
		if err != nil {
			return nil, fmt.Errorf("connections[%d]: %w", i, err)
		}
		verdicts[i] = Verdict{Connection: s.Connections[i], Allowed: allowed}
	}
	return verdicts, nil
}

// objects checks the namespaces and pods and returns them as API objects: the namespaces
// by name, the pods by "namespace/name", and the pods in input order.
func objects(s *Scenario) (map[string]*v1.Namespace, map[string]*v1.Pod, []*v1.Pod, error) {
	namespaces := map[string]*v1.Namespace{}
	for i, ns := range s.Namespaces {
		if ns.Name == "" {
			return nil, nil, nil, badInput("namespaces[%d]: name is empty", i)
		}
		if namespaces[ns.Name] != nil {
			return nil, nil, nil, badInput("namespaces[%d]: namespace %q appears twice", i, ns.Name)
		}
		labels := map[string]string{}
		for k, v := range ns.Labels {
			labels[k] = v
		}
		// The API server sets this label on every namespace, to the namespace's name.
		if v, ok := labels[v1.LabelMetadataName]; ok && v != ns.Name {
			return nil, nil, nil, badInput("namespaces[%d]: label %s is %q, but the API server sets it to the name %q", i, v1.LabelMetadataName, v, ns.Name)
		}
		labels[v1.LabelMetadataName] = ns.Name
		namespaces[ns.Name] = &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: labels}}
	}

	pods := map[string]*v1.Pod{}
	inOrder := []*v1.Pod{}
	owners := map[string]string{}
	for i, p := range s.Pods {
		key := p.Namespace + "/" + p.Name
		switch {
		case p.Name == "" || p.Namespace == "":
			return nil, nil, nil, badInput("pods[%d]: namespace and name are required", i)
		case namespaces[p.Namespace] == nil:
			return nil, nil, nil, badInput("pods[%d]: namespace %q is not in namespaces", i, p.Namespace)
		case pods[key] != nil:
			return nil, nil, nil, badInput("pods[%d]: pod %s appears twice", i, key)
		}
		ip := net.ParseIP(p.IP)
		if ip == nil {
			return nil, nil, nil, badInput("pods[%d] (%s): ip %q is not an IP address", i, key, p.IP)
		}
		// The Controller finds a pod by the text of its IP as a packet's address prints it.
		canonical := ip.String()
		if owner, taken := owners[canonical]; taken {
			return nil, nil, nil, badInput("pods[%d] (%s): ip %s is also %s's", i, key, canonical, owner)
		}
		owners[canonical] = key
		ports := make([]v1.ContainerPort, len(p.Ports))
		for j, port := range p.Ports {
			if port.Protocol == "" {
				port.Protocol = v1.ProtocolTCP // the API server's default
			}
			ports[j] = port
		}
		pod := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
			Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "main", Ports: ports}}},
			Status: v1.PodStatus{
				Phase:  v1.PodRunning,
				PodIP:  canonical,
				PodIPs: []v1.PodIP{{IP: canonical}},
			},
		}
		pods[key] = pod
		inOrder = append(inOrder, pod)
	}
	return namespaces, pods, inOrder, nil
}

// networkPolicies checks the NetworkPolicies and returns them defaulted.
func networkPolicies(s *Scenario, namespaces map[string]*v1.Namespace) ([]*networkingv1.NetworkPolicy, error) {
	seen := map[string]bool{}
	result := []*networkingv1.NetworkPolicy{}
	for i := range s.NetworkPolicies {
		np := s.NetworkPolicies[i].DeepCopy()
		key := np.Namespace + "/" + np.Name
		switch {
		case np.Name == "" || np.Namespace == "":
			return nil, badInput("networkPolicies[%d]: metadata.namespace and metadata.name are required", i)
		case namespaces[np.Namespace] == nil:
			return nil, badInput("networkPolicies[%d] (%s): namespace %q is not in namespaces", i, key, np.Namespace)
		case seen[key]:
			return nil, badInput("networkPolicies[%d]: NetworkPolicy %s appears twice", i, key)
		}
		seen[key] = true
		defaultNetworkPolicy(np)
		result = append(result, np)
	}
	return result, nil
}

// defaultNetworkPolicy applies the API server's defaults for networking.k8s.io/v1
// NetworkPolicy (k8s.io/kubernetes/pkg/apis/networking/v1/defaults.go), which objects
// read from an API server already have: the policy types, and TCP for ports.
func defaultNetworkPolicy(np *networkingv1.NetworkPolicy) {
	if len(np.Spec.PolicyTypes) == 0 {
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) != 0 {
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
	defaultPorts := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				tcp := v1.ProtocolTCP
				ports[i].Protocol = &tcp
			}
		}
	}
	for i := range np.Spec.Ingress {
		defaultPorts(np.Spec.Ingress[i].Ports)
	}
	for i := range np.Spec.Egress {
		defaultPorts(np.Spec.Egress[i].Ports)
	}
}

// resolve returns the address of a packet from or to the endpoint.
func resolve(e Endpoint, pods map[string]*v1.Pod) (net.IP, error) {
	switch {
	case e.Pod != "" && e.IP != "":
		return nil, errors.New(`give "pod" or "ip", not both`)
	case e.Pod != "":
		if !strings.Contains(e.Pod, "/") {
			return nil, fmt.Errorf("pod %q is not namespace/name", e.Pod)
		}
		pod := pods[e.Pod]
		if pod == nil {
			return nil, fmt.Errorf("pod %s is not in pods", e.Pod)
		}
		return net.ParseIP(pod.Status.PodIP), nil
	case e.IP != "":
		ip := net.ParseIP(e.IP)
		if ip == nil {
			return nil, fmt.Errorf("ip %q is not an IP address", e.IP)
		}
		return ip, nil
	default:
		return nil, errors.New(`give "pod" (namespace/name) or "ip"`)
	}
}

// noAPIServer fails every request: the Controller needs a client, but the evaluation
// reads only the informer stores.
type noAPIServer struct{}

func (noAPIServer) RoundTrip(req *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("netpol-verdict has no API server (%s %s)", req.Method, req.URL)
}

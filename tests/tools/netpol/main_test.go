package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Two tenants' namespaces and an outside one, as the scenarios below share them.
const cluster = `
  "namespaces": [
    {"name": "group-a", "labels": {"imaging.tenancy.dev/tenant": "group-a"}},
    {"name": "group-b", "labels": {"imaging.tenancy.dev/tenant": "group-b"}},
    {"name": "monitoring"}
  ],
  "pods": [
    {"namespace": "group-a", "name": "web", "labels": {"app": "web"}, "ip": "10.0.1.10",
     "ports": [{"name": "http", "containerPort": 8080}]},
    {"namespace": "group-a", "name": "worker", "labels": {"app": "worker"}, "ip": "10.0.1.11"},
    {"namespace": "group-b", "name": "db", "labels": {"app": "db"}, "ip": "10.0.2.10"},
    {"namespace": "monitoring", "name": "prometheus", "ip": "10.0.3.10"}
  ]`

const (
	defaultDenyA = `{"metadata": {"namespace": "group-a", "name": "default-deny"},
	  "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}`
	// As the API server returns it: policyTypes defaulted to Ingress.
	allowSameNamespaceA = `{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
	  "metadata": {"namespace": "group-a", "name": "allow-same-namespace", "uid": "0b1c", "resourceVersion": "42",
	    "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1},
	  "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]}}`
	allowSameNamespaceEgressA = `{"metadata": {"namespace": "group-a", "name": "allow-same-namespace-egress"},
	  "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}]}]}}`
	// The policy a tenant could add to open its namespace to everyone.
	allowAllIngressA = `{"metadata": {"namespace": "group-a", "name": "allow-all"},
	  "spec": {"podSelector": {}, "ingress": [{}]}}`
)

func scenario(parts ...string) string {
	return "{" + cluster + ",\n" + strings.Join(parts, ",\n") + "}"
}

func judge(t *testing.T, input string) []Verdict {
	t.Helper()
	var out bytes.Buffer
	if err := run(strings.NewReader(input), &out); err != nil {
		t.Fatalf("run: %v\ninput:\n%s", err, input)
	}
	var output Output
	if err := json.Unmarshal(out.Bytes(), &output); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	return output.Verdicts
}

type want struct {
	connection string
	allowed    bool
}

// check judges the connections of wants (JSON objects) in one scenario and compares.
func check(t *testing.T, input func(connections string) string, wants []want) {
	t.Helper()
	connections := make([]string, len(wants))
	for i, w := range wants {
		connections[i] = w.connection
	}
	verdicts := judge(t, input(`"connections": [`+strings.Join(connections, ",\n")+`]`))
	if len(verdicts) != len(wants) {
		t.Fatalf("%d verdicts for %d connections", len(verdicts), len(wants))
	}
	for i, w := range wants {
		if verdicts[i].Allowed != w.allowed {
			t.Errorf("connection %s: allowed = %v, want %v", w.connection, verdicts[i].Allowed, w.allowed)
		}
	}
}

func TestNoPolicyAllowsEverything(t *testing.T) {
	check(t, func(c string) string { return scenario(c) }, []want{
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "group-a/web"}, "to": {"ip": "169.254.169.254"}, "port": 80}`, true},
	})
}

func TestDefaultDenyBlocks(t *testing.T) {
	input := func(c string) string { return scenario(`"networkPolicies": [`+defaultDenyA+`]`, c) }
	check(t, input, []want{
		// Ingress into group-a, from another tenant, the same namespace and outside.
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
		{`{"from": {"ip": "203.0.113.7"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
		// Egress out of group-a.
		{`{"from": {"pod": "group-a/web"}, "to": {"pod": "group-b/db"}, "port": 5432}`, false},
		{`{"from": {"pod": "group-a/web"}, "to": {"ip": "169.254.169.254"}, "port": 80}`, false},
		{`{"from": {"pod": "group-a/web"}, "to": {"ip": "8.8.8.8"}, "protocol": "UDP", "port": 53}`, false},
		// group-b has no policy.
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "monitoring/prometheus"}, "port": 9090}`, true},
	})
}

func TestAllowSameNamespaceAdmitsOnlyTheNamespace(t *testing.T) {
	input := func(c string) string {
		return scenario(`"networkPolicies": [`+defaultDenyA+`, `+allowSameNamespaceA+`, `+allowSameNamespaceEgressA+`]`, c)
	}
	check(t, input, []want{
		{`{"from": {"pod": "group-a/worker"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "group-a/web"}, "to": {"pod": "group-a/worker"}, "protocol": "UDP", "port": 9000}`, true},
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
		{`{"from": {"pod": "monitoring/prometheus"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
		{`{"from": {"pod": "group-a/web"}, "to": {"pod": "group-b/db"}, "port": 5432}`, false},
	})
}

func TestAddedAllowAllIngressAdmitsEveryone(t *testing.T) {
	input := func(c string) string {
		return scenario(`"networkPolicies": [`+defaultDenyA+`, `+allowSameNamespaceA+`, `+allowAllIngressA+`]`, c)
	}
	check(t, input, []want{
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "monitoring/prometheus"}, "to": {"pod": "group-a/worker"}, "port": 22}`, true},
		{`{"from": {"ip": "203.0.113.7"}, "to": {"pod": "group-a/web"}, "protocol": "SCTP", "port": 1}`, true},
		// It opens ingress only: egress stays denied by default-deny.
		{`{"from": {"pod": "group-a/web"}, "to": {"pod": "group-b/db"}, "port": 5432}`, false},
	})
}

func TestEgressIPBlockAllowsOnlyItsCIDR(t *testing.T) {
	egress := `{"metadata": {"namespace": "group-a", "name": "egress-to-storage"},
	  "spec": {"podSelector": {"matchLabels": {"app": "worker"}}, "policyTypes": ["Egress"],
	    "egress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}}],
	                "ports": [{"port": 443}]}]}}`
	input := func(c string) string { return scenario(`"networkPolicies": [`+egress+`]`, c) }
	check(t, input, []want{
		{`{"from": {"pod": "group-a/worker"}, "to": {"ip": "10.20.1.1"}, "port": 443}`, true},
		{`{"from": {"pod": "group-a/worker"}, "to": {"ip": "10.20.1.1"}, "port": 80}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"ip": "10.20.1.1"}, "protocol": "UDP", "port": 443}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"ip": "10.20.5.5"}, "port": 443}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"ip": "8.8.8.8"}, "port": 443}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"ip": "169.254.169.254"}, "port": 443}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"pod": "group-b/db"}, "port": 443}`, false},
		// The policy selects the worker only.
		{`{"from": {"pod": "group-a/web"}, "to": {"ip": "8.8.8.8"}, "port": 443}`, true},
	})
}

func TestNamedPortAndNamespaceSelector(t *testing.T) {
	fromMonitoring := `{"metadata": {"namespace": "group-a", "name": "allow-monitoring"},
	  "spec": {"podSelector": {"matchLabels": {"app": "web"}},
	    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
	                 "ports": [{"port": "http"}]}]}}`
	input := func(c string) string { return scenario(`"networkPolicies": [`+fromMonitoring+`]`, c) }
	check(t, input, []want{
		{`{"from": {"pod": "monitoring/prometheus"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "monitoring/prometheus"}, "to": {"pod": "group-a/web"}, "port": 9090}`, false},
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
	})
}

// An AdminNetworkPolicy is evaluated before NetworkPolicies: its Deny wins over a
// namespace's allow-all, its Pass leaves the verdict to them.
func TestAdminNetworkPolicyDenyOverridesNamespaceAllowAll(t *testing.T) {
	anp := `{"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
	  "metadata": {"name": "tenant-isolation"},
	  "spec": {"priority": 10,
	    "subject": {"namespaces": {"matchExpressions": [{"key": "imaging.tenancy.dev/tenant", "operator": "Exists"}]}},
	    "ingress": [
	      {"name": "pass-monitoring", "action": "Pass",
	       "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
	      {"name": "deny-other-namespaces", "action": "Deny",
	       "from": [{"namespaces": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["group-a"]}]}}]}
	    ],
	    "egress": [
	      {"name": "deny-metadata", "action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}
	    ]}}`
	input := func(c string) string {
		return scenario(`"networkPolicies": [`+allowAllIngressA+`]`, `"adminNetworkPolicies": [`+anp+`]`, c)
	}
	check(t, input, []want{
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, false},
		{`{"from": {"pod": "group-a/worker"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "monitoring/prometheus"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "group-a/web"}, "to": {"ip": "169.254.169.254"}, "port": 80}`, false},
		{`{"from": {"pod": "group-a/web"}, "to": {"ip": "8.8.8.8"}, "port": 443}`, true},
	})
}

// A BaselineAdminNetworkPolicy applies only where no NetworkPolicy selects the pod.
func TestBaselineAdminNetworkPolicyYieldsToNetworkPolicies(t *testing.T) {
	banp := `{"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
	  "metadata": {"name": "default"},
	  "spec": {"subject": {"namespaces": {}},
	    "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}}`
	input := func(c string) string {
		return scenario(`"networkPolicies": [`+allowAllIngressA+`]`, `"baselineAdminNetworkPolicies": [`+banp+`]`, c)
	}
	check(t, input, []want{
		{`{"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080}`, true},
		{`{"from": {"pod": "group-a/web"}, "to": {"pod": "group-b/db"}, "port": 5432}`, false},
	})
}

func TestVerdictsEchoConnectionsInOrder(t *testing.T) {
	verdicts := judge(t, scenario(`"networkPolicies": [`+defaultDenyA+`]`, `"connections": [
	  {"from": {"pod": "group-b/db"}, "to": {"pod": "group-a/web"}, "port": 8080},
	  {"from": {"ip": "10.0.2.10"}, "to": {"ip": "10.0.3.10"}, "protocol": "UDP", "port": 53}]`))
	got, err := json.Marshal(verdicts)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"from":{"pod":"group-b/db"},"to":{"pod":"group-a/web"},"protocol":"TCP","port":8080,"allowed":false},` +
		`{"from":{"ip":"10.0.2.10"},"to":{"ip":"10.0.3.10"},"protocol":"UDP","port":53,"allowed":true}]`
	if string(got) != want {
		t.Errorf("verdicts:\n%s\nwant:\n%s", got, want)
	}
}

func TestBadInput(t *testing.T) {
	connection := `"connections": [{"from": {"pod": "group-a/web"}, "to": {"pod": "group-b/db"}, "port": 5432}]`
	cases := map[string]struct{ input, message string }{
		"not JSON":           {`{"connections": [`, "not valid JSON"},
		"unknown field":      {scenario(`"netpols": []`, connection), `unknown field "netpols"`},
		"trailing data":      {scenario(connection) + "{}", "followed by more data"},
		"unknown pod":        {scenario(`"connections": [{"from": {"pod": "group-a/nope"}, "to": {"ip": "8.8.8.8"}, "port": 1}]`), "group-a/nope is not in pods"},
		"pod and ip":         {scenario(`"connections": [{"from": {"pod": "group-a/web", "ip": "10.0.1.10"}, "to": {"ip": "8.8.8.8"}, "port": 1}]`), "not both"},
		"no endpoint":        {scenario(`"connections": [{"from": {}, "to": {"ip": "8.8.8.8"}, "port": 1}]`), `give "pod"`},
		"bad protocol":       {scenario(`"connections": [{"from": {"pod": "group-a/web"}, "to": {"ip": "8.8.8.8"}, "protocol": "ICMP", "port": 1}]`), "not TCP, UDP or SCTP"},
		"no port":            {scenario(`"connections": [{"from": {"pod": "group-a/web"}, "to": {"ip": "8.8.8.8"}}]`), "port 0"},
		"mixed families":     {scenario(`"connections": [{"from": {"pod": "group-a/web"}, "to": {"ip": "2001:db8::1"}, "port": 1}]`), "mixes IPv4 and IPv6"},
		"policy namespace":   {scenario(`"networkPolicies": [{"metadata": {"namespace": "nope", "name": "x"}, "spec": {"podSelector": {}}}]`, connection), `namespace "nope" is not in namespaces`},
		"cluster policies":   {scenario(`"clusterNetworkPolicies": [{"metadata": {"name": "x"}}]`, connection), "not ClusterNetworkPolicies"},
		"duplicate ip":       {`{"namespaces": [{"name": "a"}], "pods": [{"namespace": "a", "name": "x", "ip": "10.0.0.1"}, {"namespace": "a", "name": "y", "ip": "10.0.0.1"}]}`, "is also a/x's"},
		"wrong name label":   {`{"namespaces": [{"name": "a", "labels": {"kubernetes.io/metadata.name": "b"}}]}`, "sets it to the name"},
		"pod without ns":     {`{"pods": [{"namespace": "a", "name": "x", "ip": "10.0.0.1"}]}`, `namespace "a" is not in namespaces`},
		"pod without ip":     {`{"namespaces": [{"name": "a"}], "pods": [{"namespace": "a", "name": "x"}]}`, "is not an IP address"},
		"anp without a name": {scenario(`"adminNetworkPolicies": [{"spec": {"priority": 1}}]`, connection), "metadata.name is empty"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := run(strings.NewReader(c.input), &bytes.Buffer{})
			var bad *inputError
			if !errors.As(err, &bad) {
				t.Fatalf("error %v is not an input error (exit status 2)", err)
			}
			if !strings.Contains(err.Error(), c.message) {
				t.Errorf("error %q does not say %q", err, c.message)
			}
		})
	}
}

func TestIPv6(t *testing.T) {
	input := `{"namespaces": [{"name": "a"}],
	  "pods": [{"namespace": "a", "name": "x", "ip": "fd00:0:0::10"}],
	  "networkPolicies": [{"metadata": {"namespace": "a", "name": "egress"},
	    "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}]}}],
	  "connections": [
	    {"from": {"ip": "fd00::10"}, "to": {"ip": "2001:db8::1"}, "port": 443},
	    {"from": {"pod": "a/x"}, "to": {"ip": "2001:db9::1"}, "port": 443}]}`
	verdicts := judge(t, input)
	if !verdicts[0].Allowed || verdicts[1].Allowed {
		t.Errorf("verdicts %+v, want allowed then denied", verdicts)
	}
}

// TestUpstreamLayout checks evaluate.go against the source of the pinned
// kube-network-policies: its packet type field for field, and the signature of
// (*Controller).evaluatePacket. A pin whose internals differ fails here instead of
// passing a packet the upstream code reads wrongly.
func TestUpstreamLayout(t *testing.T) {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kube-network-policies").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/kube-network-policies: %v", err)
	}
	pkg := filepath.Join(strings.TrimSpace(string(dir)), "pkg", "networkpolicy")
	upstream := parseDir(t, pkg)
	ours := parseDir(t, ".")

	wantStruct := typeText(t, upstream, "packet")
	if got := typeText(t, ours, "packet"); got != wantStruct {
		t.Errorf("packet in evaluate.go:\n%s\nkube-network-policies' packet:\n%s", got, wantStruct)
	}
	method := funcDecl(t, upstream, "evaluatePacket", "Controller")
	if recv := text(t, upstream.fset, method.Recv.List[0].Type); recv != "*Controller" {
		t.Errorf("evaluatePacket has receiver %s, want *Controller", recv)
	}
	local := funcDecl(t, ours, "evaluatePacket", "")
	if text(t, ours.fset, local.Type.Params.List[0].Type) != "*networkpolicy.Controller" {
		t.Errorf("evaluate.go's evaluatePacket does not take the receiver first")
	}
	local.Type.Params.List = local.Type.Params.List[1:]
	if got, want := text(t, ours.fset, local.Type), text(t, upstream.fset, method.Type); got != want {
		t.Errorf("evaluate.go's evaluatePacket (without the receiver) is %s, upstream's is %s", got, want)
	}
	// The type names in both must denote the same packages.
	for _, name := range []string{"v1", "net", "context"} {
		if got, want := ours.imports[name], upstream.imports[name]; got != want {
			t.Errorf("%s is %q in evaluate.go, %q in kube-network-policies", name, got, want)
		}
	}
}

type parsed struct {
	fset    *token.FileSet
	files   []*ast.File
	imports map[string]string
}

func parseDir(t *testing.T, dir string) parsed {
	t.Helper()
	p := parsed{fset: token.NewFileSet(), imports: map[string]string{}}
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(p.fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.files = append(p.files, f)
		for _, imp := range f.Imports {
			importPath := strings.Trim(imp.Path.Value, `"`)
			name := filepath.Base(importPath)
			if imp.Name != nil {
				name = imp.Name.Name
			}
			p.imports[name] = importPath
		}
	}
	return p
}

func typeText(t *testing.T, p parsed, name string) string {
	t.Helper()
	for _, f := range p.files {
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range gen.Specs {
				if ts, ok := spec.(*ast.TypeSpec); ok && ts.Name.Name == name {
					return text(t, p.fset, ts.Type)
				}
			}
		}
	}
	t.Fatalf("no type %s", name)
	return ""
}

func funcDecl(t *testing.T, p parsed, name, receiver string) *ast.FuncDecl {
	t.Helper()
	for _, f := range p.files {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Name.Name != name || (fn.Recv != nil) != (receiver != "") {
				continue
			}
			return fn
		}
	}
	t.Fatalf("no func %s", name)
	return nil
}

func text(t *testing.T, fset *token.FileSet, node ast.Node) string {
	t.Helper()
	var b strings.Builder
	if err := printer.Fprint(&b, fset, node); err != nil {
		t.Fatal(err)
	}
	// Compare declarations, not comments or alignment.
	return strings.Join(strings.Fields(b.String()), " ")
}

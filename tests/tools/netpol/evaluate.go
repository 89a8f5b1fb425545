package main

import (
	"context"
	"fmt"
	"net"
	_ "unsafe" // for go:linkname

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

// kube-network-policies v0.8.0 evaluates a packet only in the unexported
// (*Controller).evaluatePacket, which its nfqueue callback calls for the first packet of
// each connection; the package exports no other way in. evaluatePacket reaches that
// method, and packet repeats the layout of its unexported argument type, field for field
// (pkg/networkpolicy/packet.go). TestUpstreamLayout reads both from the module's source
// and fails when a new pin changes them.

// packet is kube-network-policies' pkg/networkpolicy.packet.
type packet struct {
	id      uint32
	family  v1.IPFamily
	srcIP   net.IP
	dstIP   net.IP
	proto   v1.Protocol
	srcPort int
	dstPort int
	payload []byte
}

//go:linkname evaluatePacket sigs.k8s.io/kube-network-policies/pkg/networkpolicy.(*Controller).evaluatePacket
func evaluatePacket(c *networkpolicy.Controller, ctx context.Context, p packet) bool

// evaluateConnection returns kube-network-policies' verdict on the first packet of a
// connection: the egress policies of the pod with srcIP, then the ingress policies of the
// pod with dstIP, each in the order evaluatePacket applies them (AdminNetworkPolicies,
// NetworkPolicies, BaselineAdminNetworkPolicies).
func evaluateConnection(c *networkpolicy.Controller, srcIP net.IP, srcPort int, dstIP net.IP, dstPort int, proto v1.Protocol) (allowed bool, err error) {
	p := packet{srcIP: srcIP, dstIP: dstIP, proto: proto, srcPort: srcPort, dstPort: dstPort, family: v1.IPv6Protocol}
	if srcIP.To4() != nil {
		p.family = v1.IPv4Protocol
	}
	// A panic in the evaluation is an answer the tool cannot give, not a verdict.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kube-network-policies panicked evaluating %s:%d -> %s:%d/%s: %v", srcIP, srcPort, dstIP, dstPort, proto, r)
		}
	}()
	return evaluatePacket(c, context.Background(), p), nil
}

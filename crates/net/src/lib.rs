//! The pod network of one node (`krust-net`): the CNI configuration for the node's
//! podCIDR, routes (or a VXLAN overlay) to every other node's pods, and masquerade
//! for traffic that leaves the cluster.

//! NetworkPolicy enforcement on one node (`krust-netpol`), in an nftables table of its own.

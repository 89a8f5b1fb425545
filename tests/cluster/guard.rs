//! What every test of this binary runs under ([`ito_test_support::guard`]): the chart's RBAC and
//! admission policies bound cluster-wide, the operator acting as the chart's ServiceAccount, and
//! both kinds of the Admin-tier network layer served.

pub use ito_test_support::guard::*;

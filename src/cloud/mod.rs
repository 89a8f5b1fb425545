//! What a reconcile needs from AWS, and the AWS implementation.

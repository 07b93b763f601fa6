//! Regression tests, one per fixed bug, named `issue_NNN` after the issue
//! that reported it. Each states what was sent and what went wrong.

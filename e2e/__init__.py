"""End-to-end tooling for flaggerpy: the local control plane, scenarios and benchmarks."""

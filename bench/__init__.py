"""Greenlight's benchmarks: `make bench` (= `python -m bench`).

Every figure is measured in the same run as its baseline, against the same local control plane
(kube-apiserver + etcd from `greenlight.devcluster`): the raw API create→watch and patch→watch
round trips, taken before any operator or admission webhook is installed. docs/benchmarks.md
holds the results and explains each measurement.
"""

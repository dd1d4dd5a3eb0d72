// Package scaleout holds the multi-process tests of scaling out: several searchflow daemons,
// built without the race detector, on a kfake cluster of three brokers and a real three-master
// Redis Cluster, killed at random. It has no code of its own.
package scaleout

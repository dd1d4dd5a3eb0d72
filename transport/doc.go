// Package transport turns searchflow's credential and TLS settings into Kafka and Redis client
// options, and a failed connection into a message that names the service and the likely cause.
//
// The pipeline builds one Kafka (NewKafka) and one Redis (NewRedis) from config, gives every
// client their options, and passes a connection error through Explain before it logs it or
// reports it on /readyz. Messages never contain a password.
package transport

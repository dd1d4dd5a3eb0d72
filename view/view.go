// Package view owns searchflow's Redis view: the key schema, the aggregator's atomic batch apply
// (write.go, apply.lua) and the reads the API serves (read.go). It is the only package that knows
// key names.
//
// Layout (all under the "{searchflow}:" prefix):
//
//	users, hotels, advertisers   sorted sets, member = id, score = -count (so that ZRANGE by rank
//	                             yields count descending, ties by id ascending)
//	minprice:<hotel>             sorted set, member = advertiser, score = lowest eurocents ever seen
//	                             for that hotel (ZADD LT keeps the minimum atomically)
//	minprice_hotels              sorted set of hotel ids with a min-price hash (score 0, id order)
//	offsets:<topic>              hash partition -> next offset already applied to this view
//	sources:<topic>:<partition>  hash source partition -> highest source offset applied from it
//	                             through that partition (see Batch.Sources)
package view

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The hash tag keeps every key in one slot.
const prefix = "{searchflow}:"

// Kind names one of the three counters the view keeps.
type Kind string

// The counted kinds, as the API names them.
const (
	Users       Kind = "users"
	Hotels      Kind = "hotels"
	Advertisers Kind = "advertisers"
)

func (k Kind) key() string { return prefix + string(k) }

const (
	minPricePrefix  = prefix + "minprice:"
	minPriceHotels  = prefix + "minprice_hotels"
	offsetKeyPrefix = prefix + "offsets:"
	sourceKeyPrefix = prefix + "sources:"
)

// cacheTTL bounds how long rueidis keeps a read in its client-side cache. Redis invalidates a
// cached key as soon as it changes (RESP3 client tracking), so the TTL is only a safety net; the
// cache pays off because the API is read far more often than a batch lands.
const cacheTTL = 5 * time.Second

// View reads and writes the metrics in one Redis database.
type View struct {
	client rueidis.Client
	apply  *rueidis.Lua
}

// New returns a view over client. The client is owned by the caller.
func New(client rueidis.Client) *View {
	return &View{client: client, apply: rueidis.NewLuaScript(applyLua)}
}

// Ping checks that Redis answers.
func (v *View) Ping(ctx context.Context) error {
	if err := v.client.Do(ctx, v.client.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("view: ping redis: %w", err)
	}
	return nil
}

// TemporarilyUnavailable reports whether err says that Redis cannot serve now but will again
// without anyone repairing the data: it cannot be reached, or its error reply says it is loading
// its data set, running a long script, out of memory, unable to persist (MISCONF), cut off from
// its master or cluster, read-only as a replica, or short of replicas. The reply's code is its first word: BUSYKEY and
// BUSYGROUP are other errors than BUSY. Any other reply (WRONGTYPE, a script's error) means the
// request itself or the data is at fault.
func TemporarilyUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var reply *rueidis.RedisError
	if !errors.As(err, &reply) {
		return true // no reply at all: the connection failed or timed out
	}
	code, _, _ := strings.Cut(reply.Error(), " ")
	switch code {
	case "LOADING", "BUSY", "OOM", "MISCONF", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "NOREPLICAS",
		// Credentials and ACLs: not the batch's fault either; the operator fixes them and the
		// writer carries on.
		"NOAUTH", "WRONGPASS", "NOPERM":
		return true
	}
	return false
}

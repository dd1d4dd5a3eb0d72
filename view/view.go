// Package view owns searchflow's Redis view: the key layout (layout.go), the aggregator's atomic
// apply of a batch, one script per shard (write.go, apply.lua), and the reads the API serves,
// merged across shards (read.go). It is the only package that knows key names.
//
// Keys (see layout.go for the shards and their hash tags):
//
//	searchflow:layout                 hash: the topics and partition counts the view is built from
//	searchflow:{tag}:state            hash: "next" = next offset of the shard's partition already
//	                                  applied
//	searchflow:{tag}:sources          hash: source partition -> highest source offset applied
//	                                  through this partition (see Batch.Sources)
//	user shard:  {tag}:users          sorted set, member = user id, score = -count (so that ZRANGE
//	                                  by rank yields count descending, ties by id ascending)
//	hotel shard: {tag}:hotels         sorted set of hotel counts, like users
//	             {tag}:advertisers    sorted set: this shard's part of each advertiser's count
//	             {tag}:minprice:<h>   sorted set, member = advertiser, score = lowest eurocents
//	                                  ever seen for hotel h (ZADD LT keeps the minimum atomically)
//	             {tag}:minprice_hotels sorted set of hotel ids with a min-price key (score 0)
package view

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Kind names one of the three counters the view keeps.
type Kind string

// The counted kinds, as the API names them.
const (
	Users       Kind = "users"
	Hotels      Kind = "hotels"
	Advertisers Kind = "advertisers"
)

// role is the shards that count kind.
func (k Kind) role() Role {
	if k == Users {
		return UserShards
	}
	return HotelShards
}

// Key names inside a shard, after its prefix.
const (
	stateKey          = "state"
	sourcesKey        = "sources"
	minPriceKeyPrefix = "minprice:"
	cheapestKeyPrefix = "cheapest:"
	minPriceHotelsKey = "minprice_hotels"
)

// PriceScope is which offers a hotel's minimum price per advertiser is taken over.
type PriceScope int

const (
	// EveryOffer: each advertiser's lowest price over every offer it made for the hotel.
	EveryOffer PriceScope = iota
	// CheapestPerSearch: each advertiser's lowest price among the searches it won — whose
	// cheapest offer (ties to the first name) was its. The original project's numbers.
	CheapestPerSearch
)

// keyPrefix is the name of a hotel's key of the scope, before the hotel id.
func (s PriceScope) keyPrefix() string {
	if s == CheapestPerSearch {
		return cheapestKeyPrefix
	}
	return minPriceKeyPrefix
}

// cacheTTL bounds how long rueidis keeps a read in its client-side cache. Redis invalidates a
// cached key as soon as it changes (RESP3 client tracking), so the TTL is only a safety net; the
// cache pays off because the API is read far more often than a batch lands.
const cacheTTL = 5 * time.Second

// View reads and writes the metrics in one Redis database or Redis Cluster.
type View struct {
	client    rueidis.Client
	apply     script
	trendTop  script // trend_top.lua
	trendMins script // trend_mins.lua
	tags      *tagTable

	mu       sync.Mutex
	shards   *shards   // the layout in use; nil until claimed or read
	layoutAt time.Time // when shards was read
	claimed  bool      // this process is a writer: its layout is the one in Redis

	membersRead atomic.Int64 // members the reads returned, for tests of the read cost
}

// New returns a view over client. The client is owned by the caller.
func New(client rueidis.Client) *View {
	return &View{client: client, apply: newScript(applyLua), trendTop: newScript(trendTopLua),
		trendMins: newScript(trendMinsLua), tags: newTagTable()}
}

// script is a Lua script run by its SHA1, loaded on the node that lacks it.
type script struct {
	lua *rueidis.Lua
	sha string
}

func newScript(src string) script {
	sum := sha1.Sum([]byte(src))
	return script{lua: rueidis.NewLuaScript(src), sha: hex.EncodeToString(sum[:])}
}

// run runs the script once per exec, pipelined (to each exec's node on a cluster). An exec whose
// node does not have the script yet is run again through rueidis, which loads it. (rueidis's
// own ExecMulti loads the script on every node before every call.)
func (s script) run(ctx context.Context, c rueidis.Client, execs []rueidis.LuaExec) []rueidis.RedisResult {
	cmds := make(rueidis.Commands, len(execs))
	for i, e := range execs {
		cmds[i] = c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build()
	}
	res := c.DoMulti(ctx, cmds...)
	for i, r := range res {
		var reply *rueidis.RedisError
		if errors.As(r.Error(), &reply) && reply.IsNoScript() {
			res[i] = s.lua.Exec(ctx, c, execs[i].Keys, execs[i].Args)
		}
	}
	return res
}

// MembersRead returns how many sorted-set members the view's reads have returned so far: what a
// page of the API costs, whatever the number of commands.
func (v *View) MembersRead() int64 { return v.membersRead.Load() }

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

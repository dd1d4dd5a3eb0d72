package ops

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"

	"github.com/searchflow/searchflow/view"
)

// difference is one thing a shard holds otherwise than the fold of its partition.
type difference struct {
	shard view.Shard
	at    int64  // the shard's offset: both sides cover the records below it
	what  string // e.g. `user "u1"`, `source mark of raw partition 0`
	view  string
	kafka string // "" when what alone says it (a shard that cannot be compared)
}

func (d difference) String() string {
	s := fmt.Sprintf("%v at offset %d: %s", d.shard, max(d.at, 0), d.what)
	if d.kafka == "" {
		return s + " " + d.view
	}
	return s + ": view " + d.view + ", kafka " + d.kafka
}

// report prints differences, the first max of them, and counts them all.
type report struct {
	out io.Writer
	max int
	n   int
	err error // the first failed write
}

func (r *report) add(d difference) {
	if r.n < r.max {
		r.printf("difference: %v\n", d)
	}
	r.n++
}

func (r *report) printf(format string, args ...any) {
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.out, format, args...)
	}
}

// summary prints the closing line: what was compared and how it came out.
func (r *report) summary(checks []*shardCheck, deadRead int64) {
	var records, copies, dead int64
	for _, c := range checks {
		if c.fold != nil {
			records, copies, dead = records+c.fold.records, copies+c.fold.copies, dead+c.fold.deadLettered
		}
	}
	result := "0 differences: the view equals the fold of its topics"
	if r.n > 0 {
		result = fmt.Sprintf("%d differences (%d shown)", r.n, min(r.n, r.max))
	}
	r.printf("verify: %d shards checked, %d records read (%d copies dropped, %d dead-lettered), %d dead letters read: %s\n",
		len(checks), records, copies, dead, deadRead, result)
}

// compare reports everything the shard holds otherwise than its fold, in a fixed order: source
// marks, counts, the price index, the prices, then records nobody could read.
func (c *shardCheck) compare(r *report) {
	sh, at := c.dump.Shard, c.dump.Next
	add := func(what, inView, inKafka string) {
		r.add(difference{shard: sh, at: at, what: what, view: inView, kafka: inKafka})
	}
	if c.problem != "" {
		add("the shard", c.problem, "")
		return
	}
	f := c.fold
	compareCounts(c.dump.Sources, f.marks, func(p int32, v, k string) {
		add(fmt.Sprintf("source mark of raw partition %d", p), v, k)
	})
	for _, kind := range roleKinds(sh.Role) {
		compareCounts(c.dump.Counts[kind], f.counts[kind], func(id string, v, k string) {
			add(fmt.Sprintf("%s %q", singular(kind), id), v, k)
		})
	}
	if sh.Role == view.HotelShards {
		listed, priced := map[string]int64{}, map[string]int64{}
		for _, h := range c.dump.PricedHotels {
			listed[h] = 1
		}
		for h := range f.minPrices {
			priced[h] = 1
		}
		compareCounts(listed, priced, func(h string, v, k string) {
			add(fmt.Sprintf("hotel %q in the price index", h), present(v), present(k))
		})
		for _, h := range sortedUnion(c.dump.MinPrices, f.minPrices) {
			compareCounts(c.dump.MinPrices[h], f.minPrices[h], func(adv string, v, k string) {
				add(fmt.Sprintf("min price of hotel %q for advertiser %q", h, adv), v, k)
			})
		}
		for _, h := range sortedUnion(c.dump.Cheapest, f.cheapest) {
			if !c.cheapest {
				break // a view claimed before it kept them: they are not compared
			}
			compareCounts(c.dump.Cheapest[h], f.cheapest[h], func(adv string, v, k string) {
				add(fmt.Sprintf("cheapest-per-search price of hotel %q for advertiser %q", h, adv), v, k)
			})
		}
	}
	for _, u := range f.unread {
		add(fmt.Sprintf("record at offset %d", u.offset), "no dead letter", "cannot be read ("+u.err.Error()+")")
	}
}

// compareCounts calls diff, in key order, for every key whose value differs between inView and
// inKafka, with both values ("absent" for a missing one).
func compareCounts[K cmp.Ordered](inView, inKafka map[K]int64, diff func(key K, v, k string)) {
	for _, key := range sortedUnion(inView, inKafka) {
		v, inV := inView[key]
		k, inK := inKafka[key]
		if v != k || inV != inK {
			diff(key, value(v, inV), value(k, inK))
		}
	}
}

func value(n int64, ok bool) string {
	if !ok {
		return "absent"
	}
	return strconv.FormatInt(n, 10)
}

// present turns an index membership ("1" or "absent") into words.
func present(s string) string {
	if s == "absent" {
		return "absent"
	}
	return "listed"
}

// sortedUnion returns the keys of a and b, sorted.
func sortedUnion[K cmp.Ordered, V any](a, b map[K]V) []K {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// singular names one id of kind.
func singular(kind view.Kind) string {
	switch kind {
	case view.Hotels:
		return "hotel"
	case view.Advertisers:
		return "advertiser"
	}
	return "user"
}

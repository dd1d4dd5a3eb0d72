package generator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/searchflow/searchflow/event"
)

// advertiserNames are the booking sites a synthetic search finds offers on: the ones in the
// original project's sample, and a few more of the kind.
var advertiserNames = [...]string{
	"Amoma", "Mercure", "booking.com", "Tui.com", "Destinia", "expedia",
	"hotels.com", "agoda", "ebookers", "HRS", "lastminute.com", "Hotelopia",
}

// Synth makes synthetic raw events. Event i is a pure function of the seed, the options and i
// (and the timestamp passed in), so equal seeds give equal streams.
type Synth struct {
	seed          uint64
	users, hotels int
	opts          SynthOptions
	shaped        bool          // some option is set: Event calls shape
	lateGap       time.Duration // how far back a late event goes, beyond its disorder
	userPop       popularity
	hotelPop      popularity
	pcg           rand.PCG
	rng           *rand.Rand
	shapePCG      rand.PCG // shape's own stream: options never change an event's offers
	shapeRNG      *rand.Rand
}

// Salts that keep the seed-derived streams apart: the user ids', the users' and the hotels'
// scrambles, and the per-event stream of the options' draws.
const (
	userIDSalt   = 0x5eed5eed
	userPopSalt  = 0x7573_6572_706f_7075 // "userpopu"
	hotelPopSalt = 0x686f_7465_6c70_6f70 // "hotelpop"
	shapeSalt    = 0x7368_6170_6573_6565 // "shapesee"
)

// NewSynth returns a generator of events over users distinct users and hotels distinct hotels,
// drawn uniformly, all stamped with the time passed to Event. It is NewSynthWith with no options.
func NewSynth(seed int64, users, hotels int) *Synth {
	s := &Synth{seed: uint64(seed), users: users, hotels: hotels}
	s.rng = rand.New(&s.pcg)
	s.shapeRNG = rand.New(&s.shapePCG)
	return s
}

// NewSynthWith returns a generator like NewSynth's, shaped by opts; with the zero SynthOptions
// its stream is NewSynth's, event for event.
func NewSynthWith(seed int64, users, hotels int, opts SynthOptions) (*Synth, error) {
	if err := opts.validate(users, hotels); err != nil {
		return nil, fmt.Errorf("generator: synth: %w", err)
	}
	s := NewSynth(seed, users, hotels)
	s.opts = opts
	s.shaped = opts.Skew > 0 || opts.Disorder > 0 || opts.LateFraction > 0
	s.lateGap = lateGap(opts.Lateness, opts.Disorder)
	s.userPop = newPopularity(users, opts.Skew, s.seed^userPopSalt)
	s.hotelPop = newPopularity(hotels, opts.Skew, s.seed^hotelPopSalt)
	return s, nil
}

// UserID returns the id of user n: a version-4 UUID derived from the seed and n.
func (s *Synth) UserID(n int) string {
	p := rand.NewPCG(s.seed^userIDSalt, uint64(n))
	hi, lo := p.Uint64(), p.Uint64()
	hi = hi&^0xf000 | 0x4000         // version 4
	lo = lo&^(0xc<<60) | (0x8 << 60) // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, (hi>>16)&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

// HotelID returns the id of hotel n, numeric like the original project's.
func (s *Synth) HotelID(n int) string { return strconv.Itoa(1000 + n) }

// Event returns raw event i searched at ts, its nominal time: the options may stamp it earlier
// (never later), and pick its user and hotel by their popularity at ts.
func (s *Synth) Event(i int64, ts time.Time) event.Raw {
	s.pcg.Seed(s.seed, uint64(i))
	r := s.rng
	user, hotel, stamp := r.IntN(s.users), r.IntN(s.hotels), ts
	if s.shaped {
		user, hotel, stamp = s.shape(i, ts, user, hotel)
	}
	ev := event.Raw{
		UserID:          s.UserID(user),
		HotelID:         s.HotelID(hotel),
		SearchTimestamp: stamp.Unix(),
	}
	n := 1 + r.IntN(6)
	ev.HotelAdvertisers = make(map[string][]event.Offer, n)
	for _, a := range r.Perm(len(advertiserNames))[:n] {
		offers := make([]event.Offer, 1+r.IntN(4))
		for j := range offers {
			offers[j].Eurocents = 3000 + r.Int64N(40000)
			switch r.IntN(3) {
			case 0:
				offers[j].Breakfast = boolPtr(true)
			case 1:
				offers[j].Breakfast = boolPtr(false)
			}
		}
		ev.HotelAdvertisers[advertiserNames[a]] = offers
	}
	return ev
}

// Encode returns the event's raw JSON.
func Encode(ev event.Raw) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("generator: encode event: %w", err)
	}
	return b, nil
}

func boolPtr(b bool) *bool { return &b }

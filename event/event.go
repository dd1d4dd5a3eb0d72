// Package event is searchflow's event model: the raw search event the generator produces, the
// processed event the transformer derives from it, and the validation between them. Pure code,
// no I/O: the hot path of the transformer and the place the dead-letter reasons are defined.
package event

import (
	"encoding/json"
	"fmt"
	"time"
)

// MaxRawBytes is the largest raw record the transformer accepts; larger ones are dead-lettered.
const MaxRawBytes = 1 << 20

// Reason is a machine-readable dead-letter reason, sent in the record's "reason" header.
type Reason string

// Every reason a raw record can be rejected for.
const (
	ReasonTooLarge            Reason = "too_large"
	ReasonInvalidUTF8         Reason = "invalid_utf8"
	ReasonNotJSON             Reason = "not_json"
	ReasonNotObject           Reason = "not_object"
	ReasonMissingUserID       Reason = "missing_user_id"
	ReasonInvalidUserID       Reason = "invalid_user_id"
	ReasonMissingHotelID      Reason = "missing_hotel_id"
	ReasonInvalidHotelID      Reason = "invalid_hotel_id"
	ReasonMissingTimestamp    Reason = "missing_search_timestamp"
	ReasonInvalidTimestamp    Reason = "invalid_search_timestamp"
	ReasonMissingAdvertisers  Reason = "missing_hotel_advertisers"
	ReasonInvalidAdvertisers  Reason = "invalid_hotel_advertisers"
	ReasonNoAdvertisers       Reason = "no_advertisers"
	ReasonInvalidAdvertiser   Reason = "invalid_advertiser"
	ReasonNoOffers            Reason = "no_offers"
	ReasonInvalidOffer        Reason = "invalid_offer"
	ReasonInvalidEurocents    Reason = "invalid_eurocents"
	ReasonNonPositiveEurocent Reason = "non_positive_eurocents"
	ReasonDuplicateKey        Reason = "duplicate_key"
	ReasonTooDeep             Reason = "too_deep"
	ReasonEurocentsRange      Reason = "eurocents_out_of_range"
	ReasonUserIDTooLong       Reason = "user_id_too_long"
	ReasonHotelIDTooLong      Reason = "hotel_id_too_long"
	ReasonTooManyAdvertisers  Reason = "too_many_advertisers"
	ReasonTooManyOffers       Reason = "too_many_offers"
	ReasonNameTooLong         Reason = "advertiser_name_too_long"
	// ReasonFutureTimestamp: search_timestamp is more than the allowed skew ahead of its Kafka
	// record's timestamp (the transformer decides it: the record's timestamp is not in the
	// document).
	ReasonFutureTimestamp Reason = "future_timestamp"
)

// Future reports whether an event whose search_timestamp is searchTime (Unix seconds) is in the
// future: more than maxSkew ahead of its Kafka record's timestamp. Measured against the record,
// never the wall clock, so that a rebuild decides the same; and not against the stream's highest
// event time, since a jump after a quiet period is normal.
func Future(searchTime float64, recordTime time.Time, maxSkew time.Duration) bool {
	return searchTime > float64(recordTime.UnixMilli())/1000+maxSkew.Seconds()
}

// Reasons lists every reason a raw record can be rejected for, for documentation and metrics
// labels.
func Reasons() []Reason {
	return []Reason{ReasonTooLarge, ReasonInvalidUTF8, ReasonNotJSON, ReasonNotObject, ReasonTooDeep,
		ReasonDuplicateKey, ReasonMissingUserID, ReasonInvalidUserID, ReasonUserIDTooLong, ReasonMissingHotelID,
		ReasonInvalidHotelID, ReasonHotelIDTooLong, ReasonMissingTimestamp, ReasonInvalidTimestamp,
		ReasonMissingAdvertisers, ReasonInvalidAdvertisers, ReasonNoAdvertisers, ReasonTooManyAdvertisers,
		ReasonInvalidAdvertiser, ReasonNameTooLong, ReasonNoOffers, ReasonTooManyOffers, ReasonInvalidOffer,
		ReasonInvalidEurocents, ReasonNonPositiveEurocent, ReasonEurocentsRange, ReasonFutureTimestamp}
}

// Reasons the stages give for a record that is valid but cannot be delivered. They go in the same
// "reason" header as the validation reasons.
const (
	// ReasonProcessedTooLarge: the processed form of a valid raw record is over the producer's
	// record limit (long names that JSON escaping makes longer, for example).
	ReasonProcessedTooLarge Reason = "processed_too_large"
	// ReasonPoison: a record failed in a way not foreseen, was retried a bounded number of times
	// alone, and failed each time; the error header says how.
	ReasonPoison Reason = "poison"
	// ReasonApplyFailed: the aggregator's Redis script refused a processed record on its own
	// (for example a view key of the wrong type), repeatedly.
	ReasonApplyFailed Reason = "apply_failed"
	// ReasonUndecodable: a processed record the aggregator cannot read (only possible when
	// something other than the transformer writes the processed topic).
	ReasonUndecodable Reason = "undecodable_processed"
)

// MaxExactEurocents is the largest price kept exactly: the view stores prices as Redis sorted-set
// scores, which are doubles, exact for integers up to 2^53. A larger price is dead-lettered
// (eurocents_out_of_range) rather than shown rounded.
const MaxExactEurocents = 1 << 53

// Limits bound what one valid raw event may hold; an event past any of them is dead-lettered with
// the limit's own reason. A field of zero or less means no limit.
type Limits struct {
	AdvertisersPerEvent int // too_many_advertisers
	OffersPerAdvertiser int // too_many_offers
	AdvertiserNameBytes int // advertiser_name_too_long (bytes of the decoded name)
	IDBytes             int // user_id_too_long, hotel_id_too_long (bytes of the decoded id)
}

// DefaultLimits are the limits of MAX_ADVERTISERS_PER_EVENT, MAX_OFFERS_PER_ADVERTISER,
// MAX_ADVERTISER_NAME_BYTES and MAX_ID_BYTES by default: far above real searches (about a dozen
// advertisers with an offer or two each, 36-byte user ids), far below what strains anything.
func DefaultLimits() Limits {
	return Limits{AdvertisersPerEvent: 1000, OffersPerAdvertiser: 1000, AdvertiserNameBytes: 256, IDBytes: 256}
}

// over reports whether n is past the limit max (max <= 0: no limit).
func over(n, max int) bool { return max > 0 && n > max }

// Record headers. Dead-lettered records carry all of them; processed records carry their
// source partition and offset.
const (
	HeaderError           = "error"
	HeaderReason          = "reason"
	HeaderSourceTopic     = "source_topic"
	HeaderSourcePartition = "source_partition"
	HeaderSourceOffset    = "source_offset"
	HeaderStage           = "stage"
)

// MaxDepth is the deepest nesting of arrays and objects a raw record may have.
const MaxDepth = 512

// ValidationError says why a raw record cannot be processed.
type ValidationError struct {
	Reason Reason
	Detail string
}

func (e *ValidationError) Error() string { return string(e.Reason) + ": " + e.Detail }

func invalid(r Reason, format string, args ...any) *ValidationError {
	return &ValidationError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Offer is one price an advertiser quotes for a hotel.
type Offer struct {
	Eurocents int64 `json:"eurocents"`
	Breakfast *bool `json:"breakfast"`
}

// Raw is a raw search event as the generator produces it.
type Raw struct {
	UserID           string             `json:"user_id"`
	HotelID          string             `json:"hotel_id"`
	SearchTimestamp  int64              `json:"search_timestamp"`
	HotelAdvertisers map[string][]Offer `json:"hotel_advertisers"`
}

// MinOffer is the cheapest offer of a search and who made it.
type MinOffer struct {
	Price      int64  `json:"price"`
	Advertiser string `json:"advertiser"`
}

// Processed is what the transformer produces for each valid raw event.
type Processed struct {
	UserID              string           `json:"user_id"`
	HotelID             string           `json:"hotel_id"`
	SearchTimestamp     json.Number      `json:"search_timestamp"`
	Advertisers         []string         `json:"advertisers"`
	MinOffer            MinOffer         `json:"min_offer"`
	AdvertiserMinPrices map[string]int64 `json:"advertiser_min_prices"`
}

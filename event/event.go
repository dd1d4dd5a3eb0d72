// Package event is searchflow's event model: the raw search event the generator produces, the
// processed event the transformer derives from it, and the validation between them. Pure code,
// no I/O: the hot path of the transformer and the place the dead-letter reasons are defined.
package event

import (
	"encoding/json"
	"fmt"
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
)

// Reasons lists every reason, for documentation and metrics labels.
func Reasons() []Reason {
	return []Reason{ReasonTooLarge, ReasonInvalidUTF8, ReasonNotJSON, ReasonNotObject, ReasonTooDeep,
		ReasonDuplicateKey, ReasonMissingUserID, ReasonInvalidUserID, ReasonMissingHotelID, ReasonInvalidHotelID,
		ReasonMissingTimestamp, ReasonInvalidTimestamp, ReasonMissingAdvertisers, ReasonInvalidAdvertisers,
		ReasonNoAdvertisers, ReasonInvalidAdvertiser, ReasonNoOffers, ReasonInvalidOffer, ReasonInvalidEurocents,
		ReasonNonPositiveEurocent}
}

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

package httpapi

// Stats is the /stats document, also the "stats" of every /stream event: the pipeline's numbers,
// as the OpenAPI document describes them (components.schemas.Stats).
type Stats struct {
	Mode          map[string]string           `json:"mode"`           // kafka, redis -> embedded or external
	UptimeSeconds float64                     `json:"uptime_seconds"` //
	Stages        map[string]StageStats       `json:"stages"`         // by stage name
	Lag           map[string]map[string]int64 `json:"lag"`            // topic -> partition -> records left
	DeadLettered  int64                       `json:"dead_lettered"`  // every stage's dead letters
}

// StageStats is one stage's totals and rates (per second) over the last 1, 10 and 60 seconds.
type StageStats struct {
	Running bool                          `json:"running"`
	Totals  map[string]int64              `json:"totals"`
	Rates   map[string]map[string]float64 `json:"rates"`
}

package view

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// snapshotLockKey serialises what relies on the view's snapshot file against what replaces it:
// the keeper's rounds (write a snapshot, then trim the topics below it) and the rebuild of shards
// from the snapshot. Without it a rebuild could reset a shard to a snapshot older than a trim made
// meanwhile, and the records in between would never be counted.
const snapshotLockKey = keyPrefix + "snapshot_lock"

// releaseLua deletes the lock only while it still holds the caller's token.
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

// LockSnapshots takes the snapshot lock for at most ttl (a holder that dies frees it then). ok
// is false when another holder has it; release gives it back while it is still the caller's.
func (v *View) LockSnapshots(ctx context.Context, ttl time.Duration) (release func(context.Context) error, ok bool, err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, false, fmt.Errorf("view: lock token: %w", err)
	}
	token := hex.EncodeToString(b)
	err = v.client.Do(ctx, v.client.B().Set().Key(snapshotLockKey).Value(token).Nx().Px(ttl).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("view: take the snapshot lock: %w", err)
	}
	return func(ctx context.Context) error {
		if err := rueidis.NewLuaScript(releaseLua).Exec(ctx, v.client, []string{snapshotLockKey}, []string{token}).Error(); err != nil {
			return fmt.Errorf("view: release the snapshot lock: %w", err)
		}
		return nil
	}, true, nil
}

// WaitLockSnapshots is LockSnapshots that tries again every poll until it gets the lock or ctx
// ends.
func (v *View) WaitLockSnapshots(ctx context.Context, ttl, poll time.Duration) (func(context.Context) error, error) {
	for {
		release, ok, err := v.LockSnapshots(ctx, ttl)
		if err != nil || ok {
			return release, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("view: wait for the snapshot lock: %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}

package api

import (
	"context"
	"encoding/json"
	"fmt"
)

// postJSON POSTs body to path, decodes the answer into v and returns its raw bytes.
func (c *Client) postJSON(ctx context.Context, path string, body any, v any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	resp, err := c.do(ctx, "POST", path, nil, b)
	if err != nil {
		return nil, err
	}
	raw, err := readAnswer(resp, "POST "+path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("POST %s: decode the answer: %w", path, err)
	}
	return raw, nil
}

// Plan asks what prepare would do (POST /v1/prepare {"dry_run": true}); nothing changes.
func (c *Client) Plan(ctx context.Context) (*QuiescePlan, []byte, error) {
	var p QuiescePlan
	raw, err := c.postJSON(ctx, "/v1/prepare", map[string]bool{"dry_run": true}, &p)
	if err != nil {
		return nil, nil, err
	}
	return &p, raw, nil
}

// Prepare asks the daemon to quiesce the VM and waits for the outcome, which may take
// minutes (a database's clean stop): give ctx a long deadline. A blocked outcome is not
// an error; Outcome and Findings say what is left.
func (c *Client) Prepare(ctx context.Context) (*QuiesceResult, []byte, error) {
	var r QuiesceResult
	raw, err := c.postJSON(ctx, "/v1/prepare", struct{}{}, &r)
	if err != nil {
		return nil, nil, err
	}
	return &r, raw, nil
}

// Restore asks the daemon to undo what prepare did and waits for the outcome.
func (c *Client) Restore(ctx context.Context) (*QuiesceResult, []byte, error) {
	var r QuiesceResult
	raw, err := c.postJSON(ctx, "/v1/restore", struct{}{}, &r)
	if err != nil {
		return nil, nil, err
	}
	return &r, raw, nil
}

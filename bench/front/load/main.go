// Command load is the front benchmark's load client: -concurrency workers, each sending
// -requests requests one after another (chat or plain completions, streamed or not,
// -tokens tokens each) to -url, the key read from -key-file (never from the command
// line). It prints one JSON object: tokens/s over the whole run, the time to first
// chunk (the first byte of the answer's body) p50 and p99, whole-request latency, and
// how many requests failed.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	ttfc    time.Duration
	latency time.Duration
	tokens  int
	err     error
}

type summary struct {
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Failed      int     `json:"failed"`
	FirstError  string  `json:"first_error,omitempty"`
	Tokens      int     `json:"tokens"`
	Seconds     float64 `json:"seconds"`
	TokensPerS  float64 `json:"tokens_per_s"`
	TTFCP50Ms   float64 `json:"ttfc_p50_ms"`
	TTFCP99Ms   float64 `json:"ttfc_p99_ms"`
	LatencyP50  float64 `json:"latency_p50_ms"`
	LatencyP99  float64 `json:"latency_p99_ms"`
}

var (
	dataPrefix = []byte("data: ")
	done       = []byte("data: [DONE]")
	role       = []byte(`"role":"assistant"`)
)

func one(client *http.Client, url, key string, body []byte) result {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return result{err: fmt.Errorf("HTTP %d", resp.StatusCode)}
	}
	reader := bufio.NewReaderSize(resp.Body, 64<<10)
	var first time.Duration
	if _, err := reader.Peek(1); err != nil {
		return result{err: err}
	}
	first = time.Since(start)
	tokens := 0
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		finished := false
		for {
			line, err := reader.ReadSlice('\n')
			if bytes.HasPrefix(line, done) {
				finished = true
			} else if bytes.HasPrefix(line, dataPrefix) && !bytes.Contains(line, role) {
				tokens++
			}
			if err == io.EOF {
				break
			}
			if err != nil && err != bufio.ErrBufferFull {
				return result{err: err}
			}
		}
		if !finished {
			return result{err: fmt.Errorf("the stream ended without [DONE]")}
		}
	} else {
		var answer struct {
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(reader).Decode(&answer); err != nil {
			return result{err: err}
		}
		tokens = answer.Usage.CompletionTokens
	}
	return result{ttfc: first, latency: time.Since(start), tokens: tokens}
}

func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return float64(sorted[i].Microseconds()) / 1000
}

func main() {
	url := flag.String("url", "", "base URL, e.g. http://127.0.0.1:8000")
	keyFile := flag.String("key-file", "", "file holding the API key")
	concurrency := flag.Int("concurrency", 1, "requests in flight at once")
	requests := flag.Int("requests", 3, "requests each worker sends, one after another")
	tokens := flag.Int("tokens", 32, "max_tokens of each request")
	stream := flag.Bool("stream", true, "stream the answers")
	chat := flag.Bool("chat", true, "chat completions (else plain completions)")
	model := flag.String("model", "stand-in", "the model asked for")
	flag.Parse()
	key := ""
	if *keyFile != "" {
		raw, err := os.ReadFile(*keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(2)
		}
		key = strings.TrimSpace(string(raw))
	}
	path, payload := "/v1/completions", map[string]any{"prompt": "Say something."}
	if *chat {
		path = "/v1/chat/completions"
		payload = map[string]any{"messages": []map[string]string{{"role": "user", "content": "Say something."}}}
	}
	payload["model"], payload["max_tokens"], payload["stream"] = *model, *tokens, *stream
	body, _ := json.Marshal(payload)
	client := &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback: no proxy variable redirects it
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        *concurrency,
		MaxIdleConnsPerHost: *concurrency,
		DisableCompression:  true,
	}}
	results := make([]result, 0, *concurrency**requests)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < *requests; i++ {
				r := one(client, strings.TrimRight(*url, "/")+path, key, body)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	s := summary{Concurrency: *concurrency, Requests: len(results), Seconds: elapsed.Seconds()}
	var ttfc, latency []time.Duration
	for _, r := range results {
		if r.err != nil {
			if s.Failed == 0 {
				s.FirstError = r.err.Error()
			}
			s.Failed++
			continue
		}
		s.Tokens += r.tokens
		ttfc = append(ttfc, r.ttfc)
		latency = append(latency, r.latency)
	}
	sort.Slice(ttfc, func(i, j int) bool { return ttfc[i] < ttfc[j] })
	sort.Slice(latency, func(i, j int) bool { return latency[i] < latency[j] })
	s.TokensPerS = float64(s.Tokens) / elapsed.Seconds()
	s.TTFCP50Ms, s.TTFCP99Ms = quantile(ttfc, 0.5), quantile(ttfc, 0.99)
	s.LatencyP50, s.LatencyP99 = quantile(latency, 0.5), quantile(latency, 0.99)
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
	if s.Failed > 0 {
		os.Exit(1)
	}
}

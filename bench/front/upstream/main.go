// Command upstream stands in for a vLLM replica at GPU token rates: it answers
// POST /v1/chat/completions and POST /v1/completions as vLLM's OpenAI server does,
// streamed (server-sent events, one token a chunk, then "data: [DONE]") or not, with
// max_tokens tokens, either as fast as it can (-pace 0) or in lock-step: every open
// stream gets its next token on the same tick of one clock (-pace 10ms: 100 tokens/s a
// stream, as a GPU engine step hands them out). GET /health, /v1/models and the two
// info routes vllm-router may ask for answer too. Loopback only; it checks no key.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// clock is the lock-step: one tick for every open stream at once.
type clock struct {
	mu   sync.Mutex
	next chan struct{}
}

func newClock(pace time.Duration) *clock {
	c := &clock{next: make(chan struct{})}
	if pace > 0 {
		go func() {
			for range time.Tick(pace) {
				c.mu.Lock()
				close(c.next)
				c.next = make(chan struct{})
				c.mu.Unlock()
			}
		}()
	}
	return c
}

// tick is the channel closed on the next tick (nil when there is no pace: do not wait).
func (c *clock) tick(paced bool) <-chan struct{} {
	if !paced {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

type request struct {
	Stream    bool `json:"stream"`
	MaxTokens *int `json:"max_tokens"`
}

type server struct {
	model string
	pace  time.Duration
	clock *clock
	ids   atomic.Int64
}

const defaultTokens = 16

func (s *server) wait() {
	if ch := s.clock.tick(s.pace > 0); ch != nil {
		<-ch
	}
}

func (s *server) completions(chat bool) http.HandlerFunc {
	object, kind := "text_completion", "cmpl"
	if chat {
		object, kind = "chat.completion", "chatcmpl"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var req request
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		tokens := defaultTokens
		if req.MaxTokens != nil && *req.MaxTokens > 0 {
			tokens = *req.MaxTokens
		}
		id := kind + "-" + strconv.FormatInt(s.ids.Add(1), 16)
		created := time.Now().Unix()
		if req.Stream {
			s.stream(w, chat, object, id, created, tokens)
			return
		}
		for i := 0; i < tokens; i++ {
			s.wait()
		}
		s.whole(w, chat, object, id, created, tokens)
	}
}

// token is the text of the i-th token: a word, as a tokenizer would hand it out.
func token(i int) string { return " tok" + strconv.Itoa(i%100) }

func (s *server) stream(w http.ResponseWriter, chat bool, object, id string, created int64, tokens int) {
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	head := fmt.Sprintf(`data: {"id":%q,"object":"%s.chunk","created":%d,"model":%q,"choices":[{"index":0,`,
		id, object, created, s.model)
	if !chat {
		head = fmt.Sprintf(`data: {"id":%q,"object":%q,"created":%d,"model":%q,"choices":[{"index":0,`,
			id, object, created, s.model)
	}
	write := func(text string) bool {
		if _, err := io.WriteString(w, text); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	for i := 0; i < tokens; i++ {
		s.wait()
		var text string
		if chat && i == 0 { // vLLM's first chunk: the role, with the first engine step
			text = head + `"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n"
		}
		finish := "null"
		if i == tokens-1 {
			finish = `"length"`
		}
		var chunk string
		if chat {
			chunk = fmt.Sprintf(`"delta":{"content":%q},"logprobs":null,"finish_reason":%s}]}`, token(i), finish)
		} else {
			chunk = fmt.Sprintf(`"text":%q,"logprobs":null,"finish_reason":%s,"stop_reason":null}]}`, token(i), finish)
		}
		if !write(text + head + chunk + "\n\n") {
			return
		}
	}
	write("data: [DONE]\n\n")
}

func (s *server) whole(w http.ResponseWriter, chat bool, object, id string, created int64, tokens int) {
	text := make([]byte, 0, tokens*6)
	for i := 0; i < tokens; i++ {
		text = append(text, token(i)...)
	}
	choice := map[string]any{"index": 0, "logprobs": nil, "finish_reason": "length"}
	if chat {
		choice["message"] = map[string]any{"role": "assistant", "content": string(text)}
	} else {
		choice["text"] = string(text)
		choice["stop_reason"] = nil
	}
	answer := map[string]any{
		"id": id, "object": object, "created": created, "model": s.model,
		"choices": []any{choice},
		"usage":   map[string]int{"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	pace := flag.Duration("pace", 0, "lock-step tick (0: as fast as possible)")
	model := flag.String("model", "stand-in", "the model name it answers with")
	flag.Parse()
	s := &server{model: *model, pace: *pace, clock: newClock(*pace)}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/chat/completions", s.completions(true))
	mux.HandleFunc("/v1/completions", s.completions(false))
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model","owned_by":"vllm"}]}`, s.model)
	})
	for _, path := range []string{"/health", "/get_server_info", "/get_model_info"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "{}")
		})
	}
	server := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.ListenAndServe())
}

// Command gojson is the Go side of roster's JSON tests: it writes and reads
// agents with encoding/json, declared exactly as the Go registry declares
// them, so that roster's bytes can be compared with Go's.
//
// The first argument picks the mode. Each reads one input per line on
// standard input and writes one output line per input:
//
//	marshal  an agent described as spec (below) -> json.Marshal of the agent;
//	         after the last input, one more line: json.Marshal of all of
//	         them as a slice
//	decode   a JSON document -> json.Unmarshal into an AgentInfo, then
//	         json.Marshal of it with the heartbeat in UTC; or "error: " and
//	         the reason when Unmarshal refuses the document
//	floats   "64 BITS" or "32 BITS" (BITS in hex) -> json.Marshal of that
//	         float64 or float32
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// AgentStatus is the Go registry's status type: any string.
type AgentStatus string

// AgentInfo is the Go registry's agent, field for field and tag for tag.
type AgentInfo struct {
	ID            string      `json:"id"`
	Name          string      `json:"name"`
	Capabilities  []string    `json:"capabilities,omitempty"`
	Status        AgentStatus `json:"status"`
	LastHeartbeat time.Time   `json:"last_heartbeat"`
	CurrentLoad   int         `json:"current_load"`
	MaxLoad       int         `json:"max_load"`
}

// spec describes an agent without the time format under test: the
// heartbeat is given as Unix seconds and nanoseconds.
type spec struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Capabilities []string `json:"capabilities"`
	Status       string   `json:"status"`
	UnixSeconds  int64    `json:"unix_seconds"`
	Nanos        int64    `json:"nanos"`
	CurrentLoad  int      `json:"current_load"`
	MaxLoad      int      `json:"max_load"`
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: gojson marshal|decode|floats < input")
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<16), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch os.Args[1] {
	case "marshal":
		var all []AgentInfo
		for in.Scan() {
			var s spec
			if err := json.Unmarshal(in.Bytes(), &s); err != nil {
				fail("marshal: bad spec %q: %v", in.Text(), err)
			}
			agent := AgentInfo{
				ID:            s.ID,
				Name:          s.Name,
				Capabilities:  s.Capabilities,
				Status:        AgentStatus(s.Status),
				LastHeartbeat: time.Unix(s.UnixSeconds, s.Nanos).UTC(),
				CurrentLoad:   s.CurrentLoad,
				MaxLoad:       s.MaxLoad,
			}
			all = append(all, agent)
			writeJSON(out, agent)
		}
		writeJSON(out, all)
	case "decode":
		for in.Scan() {
			var agent AgentInfo
			if err := json.Unmarshal(in.Bytes(), &agent); err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
				continue
			}
			agent.LastHeartbeat = agent.LastHeartbeat.UTC()
			// roster's status type has no empty value: its zero value,
			// and what it reads "" as, is available.
			if agent.Status == "" {
				agent.Status = "available"
			}
			writeJSON(out, agent)
		}
	case "floats":
		for in.Scan() {
			size, hex, ok := strings.Cut(in.Text(), " ")
			bits, err := strconv.ParseUint(hex, 16, 64)
			if !ok || err != nil {
				fail("floats: bad line %q", in.Text())
			}
			switch size {
			case "64":
				writeJSON(out, math.Float64frombits(bits))
			case "32":
				writeJSON(out, math.Float32frombits(uint32(bits)))
			default:
				fail("floats: bad size in %q", in.Text())
			}
		}
	default:
		fail("unknown mode %q", os.Args[1])
	}
	if err := in.Err(); err != nil {
		fail("reading stdin: %v", err)
	}
}

// writeJSON writes json.Marshal of value and a newline.
func writeJSON(out *bufio.Writer, value interface{}) {
	data, err := json.Marshal(value)
	if err != nil {
		fail("json.Marshal: %v", err)
	}
	out.Write(data)
	out.WriteByte('\n')
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gojson: "+format+"\n", args...)
	os.Exit(1)
}

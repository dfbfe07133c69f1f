package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Schema names the generic webhook's JSON; a change that is not an added
// field gets a new version.
const Schema = "splitter.dev/notification/v1"

// Payload is the generic webhook's body (schema v1), and what the other
// formats are drawn from.
type Payload struct {
	Schema string `json:"schema"`
	// ID is "<split uid>/<seq>": the same for every attempt and every
	// re-send after a controller restart, so a receiver can drop duplicates.
	ID        string           `json:"id"`
	Seq       int64            `json:"seq"`
	Namespace string           `json:"namespace"`
	Split     string           `json:"split"`
	Workload  string           `json:"workload"`
	Policy    string           `json:"policy,omitempty"`
	Receiver  string           `json:"receiver"`
	Event     string           `json:"event"`
	Reason    string           `json:"reason"`
	Message   string           `json:"message"`
	Warning   bool             `json:"warning"`
	Phase     splitterv1.Phase `json:"phase,omitempty"`
	Revision  string           `json:"revision,omitempty"`
	Step      int32            `json:"step"`
	Weight    int32            `json:"weight"`
	Time      time.Time        `json:"time"`
}

// NewPayload describes notification n of split for a receiver.
func NewPayload(split *splitterv1.Split, n *splitterv1.Notification, receiver string) Payload {
	return Payload{
		Schema: Schema, ID: fmt.Sprintf("%s/%d", split.UID, n.Seq), Seq: n.Seq,
		Namespace: split.Namespace, Split: split.Name, Workload: split.Spec.Workload, Policy: split.Spec.Policy,
		Receiver: receiver, Event: n.Event, Reason: n.Reason, Message: n.Message, Warning: n.Warning,
		Phase: n.Phase, Revision: n.Revision, Step: n.Step, Weight: n.Weight, Time: n.At.UTC(),
	}
}

// Render is the request body for a receiver type.
func Render(t splitterv1.ReceiverType, p Payload) ([]byte, error) {
	var v any
	switch t {
	case splitterv1.ReceiverWebhook:
		v = p
	case splitterv1.ReceiverSlack:
		v = slack(p)
	case splitterv1.ReceiverTeams:
		v = teams(p)
	default:
		return nil, fmt.Errorf("unknown receiver type %q", t)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "<name>" and ">=" as they are
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Colors: bad news, a release promoted, anything else.
const (
	colorWarning = "#D0021B"
	colorGood    = "#2EB67D"
	colorInfo    = "#1D9BD1"
)

func (p Payload) color() string {
	switch {
	case p.Warning:
		return colorWarning
	case p.Event == EventPromoted:
		return colorGood
	}
	return colorInfo
}

// title is the one-line summary every format leads with.
func (p Payload) title() string {
	t := fmt.Sprintf("%s/%s: %s", p.Namespace, p.Split, p.Event)
	if p.Reason != "" && p.Reason != p.Event {
		t += " (" + p.Reason + ")"
	}
	return t
}

func (p Payload) facts() [][2]string {
	f := [][2]string{{"Phase", string(p.Phase)}}
	if p.Revision != "" {
		f = append(f, [2]string{"Revision", p.Revision})
	}
	if p.Step > 0 || p.Weight > 0 {
		f = append(f, [2]string{"Step", fmt.Sprintf("%d (candidate weight %d%%)", p.Step, p.Weight)})
	}
	if p.Policy != "" {
		f = append(f, [2]string{"Policy", p.Policy})
	}
	return f
}

// Slack: an incoming-webhook message with a coloured attachment. Legacy
// attachment fields (not blocks inside attachments) because the
// Slack-compatible webhooks of Mattermost, Rocket.Chat and Discord's
// /slack endpoint render them too.
type slackMessage struct {
	Text        string            `json:"text"`
	Attachments []slackAttachment `json:"attachments"`
}

type slackAttachment struct {
	Color    string       `json:"color"`
	Fallback string       `json:"fallback"`
	Title    string       `json:"title"`
	Text     string       `json:"text"`
	Fields   []slackField `json:"fields"`
	Footer   string       `json:"footer"`
	TS       int64        `json:"ts"`
}

type slackField struct {
	Title string `json:"title"`
	Value string `json:"value"`
	Short bool   `json:"short"`
}

// slackEscape escapes what Slack's mrkdwn treats as control characters.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slack(p Payload) slackMessage {
	icon := ":information_source:"
	switch {
	case p.Warning:
		icon = ":rotating_light:"
	case p.Event == EventPromoted:
		icon = ":white_check_mark:"
	}
	title := slackEscape.Replace(p.title())
	a := slackAttachment{
		Color: p.color(), Fallback: title + ": " + slackEscape.Replace(p.Message), Title: title,
		Text: slackEscape.Replace(p.Message), Footer: "splitter · " + p.ID, TS: p.Time.Unix(),
	}
	for _, f := range p.facts() {
		a.Fields = append(a.Fields, slackField{Title: f[0], Value: slackEscape.Replace(f[1]), Short: true})
	}
	return slackMessage{Text: icon + " " + title, Attachments: []slackAttachment{a}}
}

// Teams: an Adaptive Card in the message envelope that Teams' "post to a
// channel when a webhook request is received" workflow (and the retired
// connectors' incoming webhook) accept. Version 1.4: what Teams renders.
type teamsMessage struct {
	Type        string            `json:"type"`
	Attachments []teamsAttachment `json:"attachments"`
}

type teamsAttachment struct {
	ContentType string    `json:"contentType"`
	ContentURL  *string   `json:"contentUrl"`
	Content     teamsCard `json:"content"`
}

type teamsCard struct {
	Schema  string         `json:"$schema"`
	Type    string         `json:"type"`
	Version string         `json:"version"`
	MSTeams map[string]any `json:"msteams"`
	Body    []any          `json:"body"`
}

type teamsText struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	Wrap     bool   `json:"wrap"`
	Size     string `json:"size,omitempty"`
	Weight   string `json:"weight,omitempty"`
	Color    string `json:"color,omitempty"`
	IsSubtle bool   `json:"isSubtle,omitempty"`
}

type teamsFactSet struct {
	Type  string      `json:"type"`
	Facts []teamsFact `json:"facts"`
}

type teamsFact struct {
	Title string `json:"title"`
	Value string `json:"value"`
}

func teams(p Payload) teamsMessage {
	color := "Accent"
	switch {
	case p.Warning:
		color = "Attention"
	case p.Event == EventPromoted:
		color = "Good"
	}
	facts := teamsFactSet{Type: "FactSet"}
	for _, f := range p.facts() {
		facts.Facts = append(facts.Facts, teamsFact{Title: f[0], Value: f[1]})
	}
	return teamsMessage{Type: "message", Attachments: []teamsAttachment{{
		ContentType: "application/vnd.microsoft.card.adaptive",
		Content: teamsCard{
			Schema: "http://adaptivecards.io/schemas/adaptive-card.json", Type: "AdaptiveCard", Version: "1.4",
			MSTeams: map[string]any{"width": "Full"},
			Body: []any{
				teamsText{Type: "TextBlock", Text: p.title(), Wrap: true, Size: "Medium", Weight: "Bolder", Color: color},
				teamsText{Type: "TextBlock", Text: p.Message, Wrap: true},
				facts,
				teamsText{Type: "TextBlock", Text: "splitter · " + p.ID + " · " + p.Time.Format(time.RFC3339), Wrap: true, IsSubtle: true, Size: "Small"},
			},
		},
	}}}
}

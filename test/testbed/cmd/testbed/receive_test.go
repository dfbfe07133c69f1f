package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestReceiverPrintsOneLinePerNotification(t *testing.T) {
	var out bytes.Buffer
	at := func() time.Time { return time.Date(2026, 11, 27, 21, 4, 5, 0, time.UTC) }
	h := receiver(&out, at)
	for _, body := range []string{
		`{"schema":"splitter.dev/notification/v1","namespace":"shop","split":"app","event":"RolledBack","reason":"CheckFailed","message":"all traffic back to blue"}`,
		`{"schema":"splitter.dev/hook/v1","namespace":"shop","split":"app","hook":"smoke","point":"pre-rollout","token":"v2/1/pre-rollout/0/smoke"}`,
		`not json`,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/n", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Errorf("status %d", rec.Code)
		}
	}
	want := "21:04:05 shop/app RolledBack (CheckFailed): all traffic back to blue\n" +
		"21:04:05 shop/app hook smoke at pre-rollout step 0 (token v2/1/pre-rollout/0/smoke): answered 200\n" +
		"21:04:05 POST /n: not json\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

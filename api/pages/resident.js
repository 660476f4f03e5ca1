/* Sonae resident page: level for where you are, the route to the nearest safe open shelter, live.
 * The position stays in this page's memory: it is sent only with the route query, never stored,
 * never put in the address bar, never sent anywhere else. */
"use strict";
(function () {
  const S = window.Sonae;
  const $ = (id) => document.getElementById(id);
  const LANGS = ["ja", "en", "ja-easy"];
  const POLL_MS = 8000;
  //: the level shown is asked again when older than this, even with no event (an event stream held by a
  //: proxy, or events missed while the stream reconnected, would otherwise leave an old level up)
  const LEVEL_MAX_AGE_MS = 60000;
  //: a read the server could not answer now (any 429: a per-client limit; a 503 with Retry-After: the route, the
  //: landmark search, the reads done at start, …) is asked again after its Retry-After, at most this long (s; the
  //: server never asks for more), else after the default
  const RETRY_MAX_S = 60;
  const RETRY_DEFAULT_S = 10;

  const T = {
    ja: {
      skip: "本文へ移動", title: "Sonae 避難ナビ", drill: "訓練中です。これは訓練の情報です。",
      levelHeading: "いまの警戒レベル", levelUnknown: "場所を選んでください", whereHeading: "いる場所",
      locate: "現在地を使う", landmarkLabel: "目印の名前で探す（避難所・水位観測所）", landmarkPick: "選んでください",
      landmarkNone: "見つかりませんでした。別の名前で探してください。", landmarkFound: "{n}件見つかりました。", landmarkShort: "2文字以上入力してください。",
      landmarkBusy: "サーバーが混み合っているため、まだすべてを探せていません。", landmarkIncomplete: "まだすべてを探せていません。",
      landmarkRetry: "しばらくすると自動でもう一度探します。",
      tapHint: "地図をタップして場所を指定することもできます。", hazardLabel: "災害の種類", profileLabel: "移動の方法",
      routeHeading: "避難先と経路", routeNone: "場所を指定すると、いちばん近い安全な避難所への経路を表示します。",
      shelterName: "避難所", shelterAddress: "住所", shelterHazards: "対応する災害", distance: "距離", duration: "所要時間",
      stepsHeading: "道順", print: "経路を印刷", mapHeading: "地図",
      mapHelp: "地図を選んで、矢印キーで移動、＋と－で拡大・縮小、Enterで中心の場所を指定できます。",
      zoomIn: "拡大", zoomOut: "縮小", zoomFit: "経路全体", legendMe: "いる場所", legendRoute: "避難経路",
      legendShelter: "避難所", legendHazard: "危険な区域", legendOrder: "避難情報の対象地域",
      privacy: "位置はこの画面で経路と警戒レベルを調べるためだけに使い、保存も記録もしません。",
      boundariesCredit: "市町村界", attributionLink: "出典",
      shelters: "避難所", stations: "水位観測所", locating: "現在地を調べています…",
      locateFailed: "現在地を取得できませんでした。地図をタップするか、目印を選んでください。",
      posGps: "現在地（端末の位置情報）", posMap: "地図で選んだ場所", posLandmark: "目印：{name}",
      outside: "この場所はこのサービスの区域の外です。市町村の情報に従ってください。",
      routeError: "経路を調べられませんでした。しばらくしてからもう一度お試しください。",
      busyKept: "サーバーが混み合っているため、経路を更新できませんでした。前に調べた経路を表示しています。",
      busyNone: "サーバーが混み合っているため、まだ経路を表示できません。",
      busyOutdated: "その後、危険な区域の状況が変わりました。この経路は最新ではないおそれがあります。",
      busyRetry: "しばらくすると自動でもう一度調べます。",
      routeOtherLang: "日本語の道順は、サーバーから届きしだい表示します。",
      loading: "経路を調べています…", levelChanged: "警戒レベルが変わりました：{level}",
      routeChanged: "状況が変わったため、避難経路を変更しました。新しい経路に従ってください。",
      fromOrder: "{place}に{name}が発令されています（{time}）。", fromOrderArea: "この場所は{name}の対象地域です（{place}、{time}）。",
      fromGauge: "{station}の水位による警戒レベル{level}相当です。", fromOther: "{station}：{condition}", noAlert: "この場所に出ている避難情報はありません。",
      sources: "情報源: {names}", routeAvoids: "この経路は{hazard}の危険を避けています。", ratedAll: "避難先は{hazard}のすべてに対応しています。",
      levelLabel: "警戒レベル{level}", equivalent: "相当", updated: "最終更新 {time}", minutes: "約{m}分", mapTitle: "地図：{shelter}への避難経路",
      mapTitleNone: "地図", printed: "印刷：{time}", mapAria: "地図", zone: "（日本時間）",
      shelterFull: "（満員）", unknownArea: "この場所",
      pushHeading: "避難情報を通知で受け取る", pushIntro: "この場所の避難情報が変わったとき、画面を開いていなくても通知します。登録はいりません。",
      pushAreaLabel: "対象", pushAreaMuni: "この場所の市町村全体", pushArea1: "この場所から1km以内", pushArea3: "この場所から3km以内",
      pushDrills: "訓練の通知も受け取る", pushOn: "通知を受け取る", pushOff: "通知をやめる",
      pushPrivacy: "保存するのは通知の宛先と、選んだ地域（約100mに丸めた中心）と言語だけです。",
      pushNeedPlace: "先に「いる場所」で場所を選んでください。", pushUnsupported: "このブラウザは通知に対応していません。",
      pushDenied: "通知が許可されませんでした。ブラウザの設定で許可してください。", pushFailed: "登録できませんでした。もう一度お試しください。",
      pushDone: "通知を受け取ります。", pushStopped: "通知を止めました。", pushWorking: "登録しています…",
      pushBusy: "サーバーが混み合っているため、まだ登録できていません。しばらくすると自動でもう一度登録します。",
      staleOffline: "接続が切れています。", staleServer: "サーバーから最新の情報を取得できません。",
      staleSince: "表示は{time}時点の情報で、最新ではないおそれがあります。", staleNone: "まだ情報を取得できていません。",
      staleRetry: "自動で再接続を試みています。市町村の防災行政無線やテレビ・ラジオの情報にも注意してください。",
      levelAsOf: "{time}時点",
      startBusy: "サーバーが混み合っているため、{what}をまだ読み込めていません。", startFailed: "{what}をまだ読み込めていません。",
      startLoading: "{what}を準備しています。",
      startRetry: "しばらくすると自動でもう一度読み込みます。", startInfo: "サービス区域の地図", startStations: "水位観測所の情報",
    },
    en: {
      skip: "Skip to content", title: "Sonae evacuation guide", drill: "EXERCISE: this is a drill, not a real emergency.",
      levelHeading: "Alert level where you are", levelUnknown: "Choose where you are", whereHeading: "Where you are",
      locate: "Use my location", landmarkLabel: "Or search a landmark by name (shelter, river gauge)", landmarkPick: "Choose…",
      landmarkNone: "Nothing found. Try another name.", landmarkFound: "{n} found.", landmarkShort: "Type at least 2 characters.",
      landmarkBusy: "The server is busy, so the search is not complete yet.", landmarkIncomplete: "The search is not complete yet.",
      landmarkRetry: "It will search again automatically shortly.",
      tapHint: "You can also tap the map to set where you are.", hazardLabel: "Hazard", profileLabel: "How you travel",
      routeHeading: "Shelter and route", routeNone: "Set where you are to see the route to the nearest safe shelter.",
      shelterName: "Shelter", shelterAddress: "Address", shelterHazards: "Rated for", distance: "Distance", duration: "Time",
      stepsHeading: "Directions", print: "Print the route", mapHeading: "Map",
      mapHelp: "Focus the map, then use the arrow keys to move, + and − to zoom, and Enter to choose the centre.",
      zoomIn: "Zoom in", zoomOut: "Zoom out", zoomFit: "Whole route", legendMe: "You", legendRoute: "Evacuation route",
      legendShelter: "Shelter", legendHazard: "Danger area", legendOrder: "Area under an evacuation order",
      privacy: "Your position is used only on this page to find your route and alert level. It is never stored or recorded.",
      boundariesCredit: "Municipal boundaries", attributionLink: "Sources",
      shelters: "Shelters", stations: "River gauges", locating: "Finding your location…",
      locateFailed: "Your location is not available. Tap the map or pick a landmark.",
      posGps: "Your location (device)", posMap: "The place you chose on the map", posLandmark: "Landmark: {name}",
      outside: "This place is outside this service's area. Follow your municipality's instructions.",
      routeError: "The route could not be found just now. Please try again shortly.",
      busyKept: "The server is busy, so the route could not be updated. The route found earlier is shown.",
      busyNone: "The server is busy, so no route can be shown yet.",
      busyOutdated: "The hazard situation has changed since, so this route may be out of date.",
      busyRetry: "It will try again automatically shortly.",
      routeOtherLang: "Directions in English will be shown as soon as the server sends them.",
      loading: "Finding your route…", levelChanged: "The alert level has changed: {level}",
      routeChanged: "The situation changed, so your route has changed. Follow the new route.",
      fromOrder: "{name} issued for {place} ({time}).", fromOrderArea: "This place is inside the area of an {name} ({place}, {time}).",
      fromGauge: "River level at {station}: equivalent to alert level {level}.", fromOther: "{station}: {condition}", noAlert: "No evacuation information is in force here.",
      sources: "Sources: {names}", routeAvoids: "This route avoids {hazard} danger.", ratedAll: "The shelter is rated for all of these: {hazard}.",
      levelLabel: "Level {level}", equivalent: "equivalent", updated: "Updated {time}", minutes: "about {m} min", mapTitle: "Map: route to {shelter}",
      mapTitleNone: "Map", printed: "Printed {time}", mapAria: "Map", zone: " JST",
      shelterFull: " (full)", unknownArea: "this area",
      pushHeading: "Get alerts as notifications", pushIntro: "We notify you when evacuation information for this place changes, even when this page is closed. No account needed.",
      pushAreaLabel: "Area", pushAreaMuni: "The whole municipality of this place", pushArea1: "Within 1 km of this place", pushArea3: "Within 3 km of this place",
      pushDrills: "Also notify me of drills", pushOn: "Notify me", pushOff: "Stop notifications",
      pushPrivacy: "Only the notification address, the chosen area (its centre rounded to about 100 m) and the language are stored.",
      pushNeedPlace: "First choose a place under “Where you are”.", pushUnsupported: "This browser cannot receive notifications.",
      pushDenied: "Notifications were not allowed. Allow them in the browser settings.", pushFailed: "Could not sign up. Please try again.",
      pushDone: "You will be notified.", pushStopped: "Notifications stopped.", pushWorking: "Signing up…",
      pushBusy: "The server is busy, so signing up is not done yet. It will try again automatically shortly.",
      staleOffline: "Connection lost.", staleServer: "The latest information cannot be fetched from the server.",
      staleSince: "What is shown dates from {time} and may be out of date.", staleNone: "No information could be fetched yet.",
      staleRetry: "Reconnecting automatically. Also follow your municipality's announcements, TV and radio.",
      levelAsOf: "as of {time}",
      startBusy: "The server is busy, so part of this page could not be loaded yet: {what}.",
      startFailed: "Part of this page could not be loaded yet: {what}.",
      startLoading: "Still preparing {what}.",
      startRetry: "It will try again automatically shortly.", startInfo: "the map of the service area", startStations: "the river gauges",
    },
    "ja-easy": {
      skip: "ほんぶんへ", title: "Sonae ひなん ナビ", drill: "くんれん です。ほんとうの さいがいでは ありません。",
      levelHeading: "いまの けいかいレベル", levelUnknown: "いる ばしょを えらんで ください", whereHeading: "いる ばしょ",
      locate: "いまいる ばしょを つかう", landmarkLabel: "めじるしの なまえで さがす（ひなんじょ など）", landmarkPick: "えらんで ください",
      landmarkNone: "みつかりませんでした。ほかの なまえで さがして ください。", landmarkFound: "{n}こ みつかりました。", landmarkShort: "2もじ いじょう いれて ください。",
      landmarkBusy: "いま こんで いて、まだ ぜんぶ さがせて いません。", landmarkIncomplete: "まだ ぜんぶ さがせて いません。",
      landmarkRetry: "すこし たったら、じどうで もう いちど さがします。",
      tapHint: "ちずを さわって ばしょを えらぶ ことも できます。", hazardLabel: "さいがいの しゅるい", profileLabel: "にげかた",
      routeHeading: "にげる ばしょと みち", routeNone: "ばしょを えらぶと、ちかくの あんぜんな ひなんじょへの みちが でます。",
      shelterName: "ひなんじょ", shelterAddress: "じゅうしょ", shelterHazards: "にげて いい さいがい", distance: "きょり", duration: "じかん",
      stepsHeading: "みちじゅん", print: "みちを いんさつ する", mapHeading: "ちず",
      mapHelp: "ちずを えらんで、やじるしキーで うごかす、＋と－で おおきく ちいさく、Enterで まんなかの ばしょを えらびます。",
      zoomIn: "おおきく", zoomOut: "ちいさく", zoomFit: "みち ぜんぶ", legendMe: "いる ばしょ", legendRoute: "にげる みち",
      legendShelter: "ひなんじょ", legendHazard: "あぶない ところ", legendOrder: "ひなんの じょうほうが でて いる ところ",
      privacy: "いる ばしょは みちを しらべる ためだけに つかいます。ほぞん しません。",
      boundariesCredit: "しちょうそんの さかい", attributionLink: "でどころ",
      shelters: "ひなんじょ", stations: "かわの みずの たかさを はかる ところ", locating: "いる ばしょを しらべて います…",
      locateFailed: "いる ばしょが わかりません。ちずを さわるか、めじるしを えらんで ください。",
      posGps: "いま いる ばしょ", posMap: "ちずで えらんだ ばしょ", posLandmark: "めじるし：{name}",
      outside: "この ばしょは この サービスの そとです。しやくしょの じょうほうを みて ください。",
      routeError: "みちが わかりませんでした。すこし まって、もう いちど ためして ください。",
      busyKept: "いま こんで いて、みちを しらべなおせませんでした。まえに しらべた みちを だして います。",
      busyNone: "いま こんで いて、まだ みちを だせません。",
      busyOutdated: "そのあと、あぶない ところが かわりました。この みちは ふるい かもしれません。",
      busyRetry: "すこし たったら、じどうで もう いちど しらべます。",
      routeOtherLang: "やさしい にほんごの みちじゅんは、とどいたら だします。",
      loading: "みちを しらべて います…", levelChanged: "けいかいレベルが かわりました：{level}",
      routeChanged: "あぶない ところが かわりました。あたらしい みちで にげて ください。",
      fromOrder: "{place}に {name}が でて います（{time}）。", fromOrderArea: "ここは {name}が でて いる ところです（{time}）。",
      fromGauge: "{station}の かわの みずが たかいです（けいかいレベル{level} ぐらい）。", fromOther: "{station}：{condition}", noAlert: "ここには ひなんの じょうほうは でて いません。",
      sources: "じょうほうの でどころ: {names}", routeAvoids: "この みちは {hazard}の きけんを さけて います。", ratedAll: "にげる ところは {hazard}の ぜんぶに あんぜんです。",
      levelLabel: "けいかいレベル{level}", equivalent: "ぐらい", updated: "{time} に あたらしく しました", minutes: "{m}ぷん ぐらい",
      mapTitle: "ちず：{shelter}への みち", mapTitleNone: "ちず", printed: "いんさつ：{time}", mapAria: "ちず", zone: "（にほんの じかん）",
      shelterFull: "（いっぱい）", unknownArea: "この ちいき",
      pushHeading: "ひなんの じょうほうを つうちで うけとる", pushIntro: "この ばしょの ひなんの じょうほうが かわったら、がめんを ひらいて いなくても しらせます。",
      pushAreaLabel: "ばしょ", pushAreaMuni: "この ばしょの まち ぜんぶ", pushArea1: "この ばしょから 1キロメートル いない", pushArea3: "この ばしょから 3キロメートル いない",
      pushDrills: "くんれんの つうちも うけとる", pushOn: "つうちを うけとる", pushOff: "つうちを やめる",
      pushPrivacy: "ほぞん するのは つうちの あてさきと、えらんだ ばしょ（だいたい 100メートル）と ことばだけ です。",
      pushNeedPlace: "さきに「いる ばしょ」を えらんで ください。", pushUnsupported: "この ブラウザは つうちが つかえません。",
      pushDenied: "つうちが ゆるされて いません。ブラウザの せっていを みて ください。", pushFailed: "できませんでした。もう いちど ためして ください。",
      pushDone: "つうちを うけとります。", pushStopped: "つうちを やめました。", pushWorking: "とうろく して います…",
      pushBusy: "いま こんで いて、まだ とうろく できて いません。すこし たったら、じどうで もう いちど とうろく します。",
      staleOffline: "インターネットに つながって いません。", staleServer: "あたらしい じょうほうが とれません。",
      staleSince: "ここに ある じょうほうは {time}の ものです。いまは ちがう かもしれません。", staleNone: "まだ じょうほうが とれて いません。",
      staleRetry: "なんども つなぎなおして います。テレビや ラジオ、まちの ほうそうも きいて ください。",
      levelAsOf: "{time}の じょうほう",
      startBusy: "いま こんで いて、{what}を まだ よみこめて いません。", startFailed: "{what}を まだ よみこめて いません。",
      startLoading: "{what}を じゅんびして います。",
      startRetry: "すこし たったら、じどうで もう いちど よみこみます。", startInfo: "この サービスの ちず", startStations: "かわの みずを はかる ところの じょうほう",
    },
  };
  const LEVEL = {
    ja: {
      0: ["発表なし", "いまは避難の必要はありません。最新の情報に注意してください。"],
      1: ["早期注意情報", "災害への心構えを高めてください。"],
      2: ["注意報", "避難に備え、ハザードマップなどで避難先と経路を確認してください。"],
      3: ["高齢者等避難", "危険な場所から高齢者など避難に時間のかかる人は避難してください。ほかの人も避難の準備をしてください。"],
      4: ["避難指示", "危険な場所から全員避難してください。"],
      5: ["緊急安全確保", "命の危険があります。直ちに身の安全を確保してください。"],
    },
    en: {
      0: ["No alert", "You do not need to evacuate now. Keep checking for updates."],
      1: ["Early warning", "Stay alert for a possible disaster."],
      2: ["Advisory", "Check your shelter and route on the hazard map so you are ready."],
      3: ["Evacuate if elderly", "Older people and anyone who needs time or help: leave danger areas now. Everyone else: get ready."],
      4: ["Evacuation order", "Everyone in a danger area: evacuate now."],
      5: ["Emergency safety", "Your life is in danger. Secure your safety immediately."],
    },
    "ja-easy": {
      0: ["でて いません", "いまは にげなくて だいじょうぶ です。じょうほうに きを つけて ください。"],
      1: ["ちゅうい", "さいがいに きを つけて ください。"],
      2: ["ちゅういほう", "にげる ばしょと みちを たしかめて ください。"],
      3: ["おとしよりは にげる", "おとしよりや からだの ふじゆうな ひとは にげて ください。ほかの ひとは にげる じゅんびを して ください。"],
      4: ["みんな にげる", "あぶない ところに いる ひとは みんな にげて ください。"],
      5: ["いのちを まもる", "いのちが あぶないです。すぐに あんぜんな ところへ いって ください。"],
    },
  };
  /* A level from a river gauge (or other information) is 警戒レベルN相当: the river's state, never an order.
   * Only a municipality issues 高齢者等避難 (3), 避難指示 (4), 緊急安全確保 (5): LEVEL's names are for issued
   * orders only. A gauge level is named by the 警戒レベル相当情報 of its stage and says what to do
   * (内閣府「避難情報に関するガイドライン」令和3年5月, 警戒レベルと相当情報の表: 氾濫注意情報 2相当,
   * 氾濫警戒情報 3相当, 氾濫危険情報 4相当, 氾濫発生情報 5相当; 国土交通省・気象庁「防災気象情報に関する検討会」
   * 取りまとめ 令和6年6月: the level number is put first, e.g. レベル４氾濫危険警報, and 氾濫危険水位 stays the
   * stage of 4相当). Sonae's gauges are no 指定河川洪水予報, so the guideline's 相当情報 names are used; at 5 the
   * stage reached (氾濫開始水位), since 氾濫発生情報 means a flood confirmed (alerting/levels.py). */
  const GAUGE = {
    ja: {
      2: ["氾濫注意情報", "ハザードマップなどで避難先と経路を確認してください。市町村の避難情報に注意してください。"],
      3: ["氾濫警戒情報", "危険な場所から高齢者など避難に時間のかかる人は避難してください。ほかの人も避難の準備をしてください。"],
      4: ["氾濫危険情報", "危険な場所から全員避難してください。"],
      5: ["氾濫開始水位に到達", "命の危険があります。直ちに身の安全を確保してください。"],
    },
    en: {
      2: ["River flood advisory", "Check your shelter and route on the hazard map. Watch for your municipality's evacuation information."],
      3: ["River flood warning", "Older people and anyone who needs time or help: leave danger areas now. Everyone else: get ready."],
      4: ["River flood danger", "Everyone in a danger area: evacuate now."],
      5: ["River at overflow stage", "Your life is in danger. Secure your safety immediately."],
    },
    "ja-easy": {
      2: ["かわに ちゅうい", "にげる ばしょと みちを たしかめて ください。"],
      3: ["かわが あぶない", "おとしよりや からだの ふじゆうな ひとは にげて ください。ほかの ひとは にげる じゅんびを して ください。"],
      4: ["かわが あふれる かもしれない", "あぶない ところに いる ひとは みんな にげて ください。"],
      5: ["かわが あふれそう", "いのちが あぶないです。すぐに あんぜんな ところへ いって ください。"],
    },
  };

  const HAZ = {
    flood: ["洪水", "Flood", "こうずい"], landslide: ["土砂災害", "Landslide", "どしゃさいがい"],
    storm_surge: ["高潮", "Storm surge", "たかしお"], earthquake: ["地震", "Earthquake", "じしん"],
    tsunami: ["津波", "Tsunami", "つなみ"], large_fire: ["大規模な火事", "Large fire", "おおきな かじ"],
    inland_flooding: ["内水氾濫", "Inland flooding", "まちの なかの こうずい"], volcano: ["火山", "Volcano", "かざん"],
  };
  const PROFILES = {
    walk: ["徒歩", "On foot", "あるいて"], reduced_mobility: ["ゆっくり（車いす・介助など）", "Reduced mobility", "ゆっくり"],
    car: ["車", "By car", "くるまで"],
  };
  const li = (lang) => LANGS.indexOf(lang);
  const listJoin = (items) => items.join(state.lang === "en" ? ", " : "、");
  // a hazard or a set of them as the route answers it ("flood,landslide"), named in the page's language
  const hazName = (hz) => listJoin(String(hz).split(",").map((h) => (HAZ[h] || [h, h, h])[li(state.lang)]));

  const state = {
    lang: "ja", pos: null, posSource: null, posNames: null, hazard: "flood", routeHazard: null, profile: "walk",
    info: null, shelters: [], stations: [], alerts: [], hazards: [], route: null, routeSig: "",
    level: null, drill: false, hazardVersion: null, seq: 0, lastNotice: "", picks: [], pickQuery: "",
    // the landmark search shown is not complete (the server could not answer it now): null, or {text, since,
    // retryAt (ms since the epoch; null: no retry of its own), busy (refused for now, not a fault), tries}
    pickBusy: null,
    // the reads done once at start not answered yet (startRead): name -> {since, retryAt, tries, busy}
    startPending: {},
    // the event stream was refused (connect): null, or {since, retryAt, tries} until it is open again
    streamRefused: null,
    // freshness: when the level (levelAt) and the alerts (alertsAt) were last answered (ms since the epoch),
    // and why they cannot be now (stale: null, "offline" no network, "server" the server answered 5xx)
    levelAt: null, alertsAt: null, stale: null,
    // the last route asked for was refused as busy: null, or {since, retryAt (ms since the epoch), retryAfterS,
    // live (a live update was refused)}; hazardsChangedAt: when the hazard state last changed (/api/v1/hazards)
    routeBusy: null, hazardsChangedAt: null,
    // what the last route request asked for besides the place, profile and language (routeAsks(); null: none yet)
    routeAsked: null,
  };
  window.sonaeResident = state; // for tests and debugging: nothing here leaves the page

  function t(key, vars) {
    let s = (T[state.lang] && T[state.lang][key]) || T.ja[key] || key;
    for (const k in vars || {}) s = s.split("{" + k + "}").join(vars[k]);
    return s;
  }

  /* A time in Japan time whatever the browser's own zone (Sonae serves Fukushima), marked in the page's language
   * (T.*.zone): found, a browser set to UTC showed 02:30 for 11:30 JST. */
  function fmtTime(iso, withDate) {
    const d = iso ? new Date(iso) : new Date();
    const opts = { timeZone: "Asia/Tokyo", hour: "2-digit", minute: "2-digit" };
    if (withDate) Object.assign(opts, { year: "numeric", month: "numeric", day: "numeric" });
    return d.toLocaleString(state.lang === "en" ? "en-GB" : "ja-JP", opts) + t("zone");
  }

  function fmtDistance(m) {
    if (m == null) return "";
    // the rule of evac/guidance.py format_distance, so the details say what the guidance says
    const v = m < 1000 ? Math.round(m / 10) * 10 : (Math.round(m / 100) / 10).toFixed(1);
    const unit = m < 1000 ? { ja: "m", en: " m", "ja-easy": "メートル" } : { ja: "km", en: " km", "ja-easy": "キロメートル" };
    return v + unit[state.lang];
  }

  /* meta (optional): an object given the answer's Retry-After (retryAfter), for an answer that is complete for now
   * only (startRead) */
  async function getJSON(url, init, meta) {
    const r = await fetch(url, { ...init, headers: { Accept: "application/json, application/geo+json", ...(init || {}).headers } });
    if (meta) meta.retryAfter = r.headers.get("Retry-After");
    if (!r.ok) {
      const err = new Error("HTTP " + r.status);
      err.status = r.status;
      err.retryAfter = r.headers.get("Retry-After");
      // the problem's status_code says which refusal it is (route_busy: the route budget)
      if (/json/.test(r.headers.get("Content-Type") || "")) err.problem = await r.json().catch(() => null);
      throw err;
    }
    return r.json();
  }

  /* Connection state. A failed read of live information (no network, a 5xx: the server or its database is
   * down, api/edge.py answers 503, or a 429: this client's address is over the rate limit, api/ratelimit.py)
   * never leaves an old level shown as current, nor blanks it: the level stays, #stale says the latest cannot
   * be fetched and the time the shown information dates from, the level box is marked, and poll() keeps
   * retrying; the next fresh answer clears it (found: a 429 was taken as an answer, the level it kept was shown
   * as current with no retry until it was a minute old). Another 4xx (e.g. a place outside the area) is an
   * answer, not this. networkOnly: only a network failure (the hazards and the route: their 503 is also "no
   * routing here", and a refused poll of the hazards is asked again at the next). */
  function failed(err, networkOnly) {
    if (err && err.status && (networkOnly || (err.status < 500 && err.status !== 429))) return;
    markStale(err && err.status ? "server" : "offline");
  }

  function markStale(why) {
    if (state.stale === why) return;
    state.stale = why;
    renderStale();
  }

  function markFresh(what) {
    state[what] = Date.now();
    // fresh when what the page shows is: the level where a place is chosen, else the alerts
    if (state.stale && (what === "levelAt" || !state.pos)) {
      state.stale = null;
      renderStale();
    }
    renderUpdated();
  }

  /* the footer's "updated" time: when what the page shows was answered (the level where a place is chosen,
   * else the alerts), in the page's language (re-rendered when it changes) */
  function renderUpdated() {
    const at = state.pos && state.levelAt ? state.levelAt : state.alertsAt;
    $("updated").textContent = at ? t("updated", { time: fmtTime(new Date(at).toISOString()) }) : "";
  }

  function renderStale() {
    const box = $("stale");
    if (!box) return;
    const card = $("level-card");
    if (!state.stale) {
      box.hidden = true;
      box.textContent = "";
      card.removeAttribute("data-stale");
      $("level-asof").textContent = "";
      return;
    }
    const at = state.pos ? state.levelAt : state.alertsAt;
    const time = at ? fmtTime(new Date(at).toISOString()) : null;
    box.textContent = [t(state.stale === "offline" ? "staleOffline" : "staleServer"),
      time ? t("staleSince", { time }) : t("staleNone"), t("staleRetry")].join(" ");
    box.hidden = false;
    card.setAttribute("data-stale", state.stale);
    $("level-asof").textContent = time && state.level !== null ? t("levelAsOf", { time }) : "";
  }

  // -- texts ----------------------------------------------------------------------------------------
  function applyTexts() {
    document.documentElement.lang = state.lang === "en" ? "en" : "ja";
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.getAttribute("data-t"));
    for (const b of document.querySelectorAll(".langs button")) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-lang") === state.lang));
    }
    $("map").setAttribute("aria-label", t("mapAria"));
    fillSelect($("hazard"), (state.info && state.info.hazards) || Object.keys(HAZ), HAZ, state.hazard);
    fillSelect($("profile"), Object.keys(PROFILES), PROFILES, state.profile);
    renderWhere();
    renderPicks();
    renderNotice();
    renderStale();
    renderStartBusy();
    renderUpdated();
  }

  /* the line under "where you are", in the current language (re-rendered when the language changes); a landmark
   * by its name in that language, in the search box too while it holds the landmark's name (found: the name of
   * the language it was picked in stayed after a switch, "目印：Ichido River Gauge") */
  function renderWhere() {
    const w = $("where-status");
    if (state.posSource === "gps") w.textContent = t("posGps");
    else if (state.posSource === "landmark") {
      const n = state.posNames;
      w.textContent = t("posLandmark", { name: landmarkName(n) });
      const box = $("landmark");
      if ([n.name, n.name_en, n.kana && n.name + "（" + n.kana + "）"].includes(box.value)) box.value = landmarkName(n);
    } else if (state.posSource === "map") w.textContent = t("posMap");
  }

  /* a landmark ({name, name_en, kana}: a shelter's or a gauge's, from the registry) named in the page's language:
   * English readers get its English name when it has one, やさしい日本語 its reading after the kanji */
  function landmarkName(it) {
    return state.lang === "en" && it.name_en ? it.name_en
      : state.lang === "ja-easy" && it.kana && it.kana !== it.name ? it.name + "（" + it.kana + "）" : it.name;
  }

  function fillSelect(sel, keys, names, value) {
    sel.textContent = "";
    for (const k of keys) {
      const o = document.createElement("option");
      o.value = k;
      o.textContent = (names[k] || [k])[li(state.lang)] || k;
      sel.appendChild(o);
    }
    sel.value = value;
  }

  /* A gauge's name as this page's language reads it, from the station registry's own fields (never made up):
   * やさしい日本語 adds its reading (kana) after the kanji, English uses its romanised name when the
   * registry has one; otherwise the name as registered. */
  function stationName(id, name) {
    const st = state.stations.find((x) => x.id === id);
    const base = name || (st && st.name) || id || "";
    if (!st) return base;
    if (state.lang === "en" && st.name_en) return st.name_en;
    if (state.lang === "ja-easy" && st.kana && st.kana !== base && !base.includes(st.kana)) return base + "（" + st.kana + "）";
    return base;
  }

  function inService(p) {
    const a = state.info && state.info.service_area;
    return !a || (p.lon >= a[0] && p.lon <= a[2] && p.lat >= a[1] && p.lat <= a[3]);
  }

  /* The landmark search: shelters by name from the server (GET /api/v1/shelters?q=&limit=), river gauges
   * (a few hundred, already loaded) by name here. Only the typed words are sent, never a position.
   * A search the server did not answer (askAgain: a refusal for now, a 5xx, no network) is no "nothing found"
   * (found: a 429 of the rate limit, met by everyone behind one busy address, said "Nothing found. Try another
   * name."): what was found among the gauges is shown, the status says that the search is not complete (and that
   * the server is busy, when it said so) and that it searches again by itself, and one retry is made after
   * Retry-After (retryDelayMs) if the box still holds the same text; typing replaces it. The same while the gauges
   * are not read yet (startRead): the search runs again when they are. */
  const PICK_LIMIT = 8;
  let pickSeq = 0, pickTimer = null, pickRetry = null;
  function searchLandmarks() {
    clearTimeout(pickTimer);
    pickTimer = setTimeout(runSearch, 200);
  }

  async function runSearch() {
    const text = $("landmark").value.trim();
    const seq = ++pickSeq;
    clearTimeout(pickRetry);  // this search replaces the pending retry (not answered again, it schedules one)
    pickRetry = null;
    const before = state.pickBusy && state.pickBusy.text === text ? state.pickBusy : null;
    state.pickBusy = null;
    state.pickQuery = text;
    if ([...text].length < 2) { state.picks = []; renderPicks(); return; }
    let shelters = [], missed = null;
    try {
      const q = new URLSearchParams({ q: text, limit: String(PICK_LIMIT), format: "json" });
      shelters = (await getJSON("/api/v1/shelters?" + q.toString())).shelters || [];
    } catch (err) {
      missed = askAgain(err) ? err : null;  // another 4xx: the text is refused as such (nothing found)
    }
    if (seq !== pickSeq) return;
    // the gauges are searched here, in the registry read at start: until it is read the search is not complete
    // either (it runs again once it is, startAnswered)
    const gaugesMissing = state.startPending.stations;
    if (missed) {
      const tries = before ? before.tries + 1 : 1;
      const delay = retryDelayMs(missed, tries);
      const now = Date.now();
      state.pickBusy = { text, since: before ? before.since : now, retryAt: now + delay, busy: refusedForNow(missed), tries };
      pickRetry = setTimeout(() => {
        pickRetry = null;
        if ($("landmark").value.trim() === text) runSearch();  // (another text: its own search is on its way)
      }, delay);
    } else if (gaugesMissing) {
      state.pickBusy = { text, since: Date.now(), retryAt: null, busy: gaugesMissing.busy, tries: 0 };
    }
    const low = text.toLowerCase();
    const gauges = state.stations.filter((s) => s.location && inService(s.location) &&
        [s.name, s.name_en, s.kana].some((n) => n && n.toLowerCase().includes(low)))
      .slice(0, PICK_LIMIT)
      .map((s) => ({ kind: "g", id: s.id, name: s.name, name_en: s.name_en, kana: s.kana, sub: s.river || "", lat: s.location.lat, lon: s.location.lon }));
    state.picks = shelters.map((s) => ({ kind: "s", id: s.id, name: s.name, sub: s.address || "", lat: s.lat, lon: s.lon }))
      .concat(gauges);
    renderPicks();
  }

  function renderPicks() {
    const ul = $("landmark-results");
    if (!ul) return;
    ul.textContent = "";
    const status = $("landmark-status");
    if (!state.pickQuery) { status.textContent = ""; return; }
    if ([...state.pickQuery].length < 2) { status.textContent = t("landmarkShort"); return; }
    const busy = state.pickBusy;
    status.textContent = [state.picks.length ? t("landmarkFound", { n: state.picks.length }) : busy ? "" : t("landmarkNone"),
      busy ? t(busy.busy ? "landmarkBusy" : "landmarkIncomplete") : "", busy ? t("landmarkRetry") : ""]
      .filter(Boolean).join(" ");
    for (const it of state.picks) {
      const name = landmarkName(it);
      const item = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.setAttribute("data-pick", it.kind + ":" + it.id);
      b.textContent = name;
      if (it.sub) {
        const sub = document.createElement("span");
        sub.className = "sub muted";
        sub.textContent = it.sub;
        b.appendChild(sub);
      }
      b.addEventListener("click", () => {
        clearTimeout(pickRetry);  // a place is chosen: the search is over
        pickRetry = null;
        state.pickBusy = null;
        state.picks = [];
        state.pickQuery = "";
        $("landmark").value = name;
        renderPicks();
        setPos({ lat: it.lat, lon: it.lon }, "landmark", { name: it.name, name_en: it.name_en, kana: it.kana });
      });
      item.appendChild(b);
      ul.appendChild(item);
    }
  }

  /* Shelters of the map's view, fetched by area: the view's bounds widened to a 0.05° grid (so a request
   * names grid cells, never a position), at most SHELTER_LIMIT of them (nearest the view's centre first).
   * A read the server did not answer (askAgain) is asked again after Retry-After (retryDelayMs), not before (a
   * redraw of the map asks for its view's shelters), unless the view moves to other cells first (found: refused,
   * the view's shelters stayed missing, on the map and as the nearest shelter of a push sign-up, until the
   * resident moved the map). */
  const SHELTER_GRID = 0.05, SHELTER_LIMIT = 400;
  let shelterKey = "", shelterTimer = null, shelterTries = 0, shelterRetry = null, shelterRefused = null;
  function sheltersForView(b) {
    clearTimeout(shelterTimer);
    shelterTimer = setTimeout(() => loadShelters(b), 150);
  }

  async function loadShelters(b) {
    const g = SHELTER_GRID;
    const cell = [Math.floor(b[0] / g) * g, Math.floor(b[1] / g) * g, Math.ceil(b[2] / g) * g, Math.ceil(b[3] / g) * g]
      .map((v) => v.toFixed(2));
    if (cell[0] === cell[2]) cell[2] = (Number(cell[2]) + g).toFixed(2);
    if (cell[1] === cell[3]) cell[3] = (Number(cell[3]) + g).toFixed(2);
    const key = cell.join(",");
    if (key === shelterKey) return;
    if (shelterRefused && shelterRefused.key === key && Date.now() < shelterRefused.until) return;  // (its retry)
    clearTimeout(shelterRetry);
    shelterRetry = shelterRefused = null;
    shelterKey = key;
    try {
      const d = await getJSON("/api/v1/shelters?" + new URLSearchParams({ bbox: key, limit: String(SHELTER_LIMIT) }).toString());
      if (key !== shelterKey) return;
      shelterTries = 0;
      state.shelters = d.features.map((f) => ({ ...f.properties, lon: f.geometry.coordinates[0], lat: f.geometry.coordinates[1] }));
      drawMap(false);
    } catch (err) {
      if (key !== shelterKey) return;  // (the view has moved: its own read is on its way)
      shelterKey = "";
      if (!askAgain(err)) return;
      const delay = retryDelayMs(err, ++shelterTries);
      shelterRefused = { key, until: Date.now() + delay };
      shelterRetry = setTimeout(() => {  // one pending: a move of the view to other cells replaces it
        shelterRetry = shelterRefused = null;
        if (map && map.view) loadShelters(map.bounds());
      }, delay);
    }
  }

  // -- level for where you are ------------------------------------------------------------------------
  function nearestShelter(p) {
    let best = null, bd = Infinity;
    for (const s of state.shelters) {
      const d = S.distanceM(p, s);
      if (d < bd) { bd = d; best = s; }
    }
    return best;
  }

  /* The level for the position comes from the server (/api/v1/level), so the rule lives in one place:
   * official warnings (JMA) in force there, orders whose area covers the point, orders and gauge alerts of
   * its municipality, gauges within 5 km (alerting/level.py).
   * The position is rounded to about 10 m, as for routes, and is not stored or logged there. */
  let levelSeq = 0;
  async function computeLevel() {
    if (!state.pos) return;
    const seq = ++levelSeq;
    let body;
    try {
      // in the page's language: outside the covered area the answer's own headline is shown (alerting/level.py)
      body = await getJSON("/api/v1/level?lat=" + state.pos.lat.toFixed(4) + "&lon=" + state.pos.lon.toFixed(4)
        + "&lang=" + encodeURIComponent(state.lang));
    } catch (err) {
      if (seq === levelSeq) failed(err);
      return;
    }
    if (seq !== levelSeq) return; // a newer position or change has asked since
    markFresh("levelAt");
    // a point in no municipality Sonae knows: not "no alert level" (all calm) but "outside the area", as the
    // answer says it (headline and instruction, in the language asked for)
    state.levelOutside = body.covered === false && body.level == null
      ? { lang: state.lang, headline: body.headline || t("outside"), instruction: body.instruction || "" } : null;
    const top = body.alert_id ? state.alerts.find((a) => a.id === body.alert_id) || null
      : (body.condition === "official_information" ? { condition: "official_information", level: body.level } : null);
    const level = body.level || 0;
    const old = state.level;
    state.level = level;
    state.levelAlert = top;
    state.levelSources = body.sources || [];
    // the hazards in force there name the shelters a route may end at: every one of them at once (a gauge's
    // flood and a 土砂災害 warning: a site rated for flood and landslide, alerting/level.py route_hazard),
    // never just the highest; unless the resident picked a hazard themselves. Once none is in force the set
    // is dropped (the route is asked for the last single hazard again): found, a flood-and-landslide pair
    // stayed on every route request after both had ended
    const inForce = body.route_hazard || body.hazard || null;
    if (!state.hazardChosen && inForce !== state.routeHazard && (inForce || state.routeHazard)) {
      state.routeHazard = inForce;
      if (inForce) {
        state.hazard = body.hazard || inForce.split(",")[0];
        if ($("hazard")) $("hazard").value = state.hazard;
      }
    }
    state.municipality = body.municipality_code || null; // from the municipal boundaries (server side)
    // the drill town (no boundary, inside a real municipality): the position is in it too, for drills only
    state.exerciseMunicipality = body.exercise_municipality_code || null;
    state.drill = !!body.exercise_in_progress || !!(state.route && state.route.properties.exercise);
    renderLevel();
    // the route is asked again when this answer changes what it is asked for: other hazards in force, or a drill
    // learnt of after the route was asked for in real mode (so the drill's areas and shelters count). Found: it
    // was asked again whenever the hazards in force were new to the page, also when they were the one asked for
    // already: every page opened where a gauge's flood was in force asked the same route twice
    if (state.routeAsked !== null && inService(state.pos) && routeAsks() !== state.routeAsked) loadRoute("live");
    if (old !== null && old !== level) notice(() => t("levelChanged", { level: levelTitle(level, top) }));
  }

  /* The level's title and what to do: an issued order (condition evacuation_order) by its order name;
   * anything else (a gauge, official information) is 警戒レベルN相当 with its own name (GAUGE, or the
   * official source's), never an order's name. */
  function levelWords(level, a) {
    if (!level) return LEVEL[state.lang][0];
    if (a && a.condition === "evacuation_order") return LEVEL[state.lang][level];
    const action = (GAUGE[state.lang][level] || LEVEL[state.lang][level])[1];
    if (a && a.condition === "river_level" && GAUGE[state.lang][level]) return [GAUGE[state.lang][level][0], action];
    const official = (state.levelSources || []).find((x) => x.kind === "official" && x.level === level);
    if (official) return [(official.names ? Object.values(official.names)[li(state.lang)] : official.name) || "", action];
    return [a && a.condition ? S.conditionName(a.condition, state.lang) : "", action];
  }

  function levelTitle(level, a) {
    if (!level && state.levelOutside) return state.levelOutside.headline;
    const name = levelWords(level, a)[0];
    if (!level) return name;
    const ordered = a && a.condition === "evacuation_order";
    const eq = ordered ? "" : (state.lang === "en" ? " (" + t("equivalent") + ")" : t("equivalent"));
    return t("levelLabel", { level }) + eq + (name ? " " + name : "");
  }

  function renderLevel() {
    const box = $("level");
    if (state.level === null) return;
    const a = state.levelAlert;
    const outside = state.levelOutside;
    if (outside && !state.level) {
      box.setAttribute("data-level", "outside");
      $("level-num").textContent = "–";
      // the answer's texts are in the language it was asked in: after a change of language, the page's own
      // outside text until the answer in the new language is in (never another language's words)
      const current = outside.lang === state.lang;
      $("level-name").textContent = current ? outside.headline : t("outside");
      $("level-action").textContent = current ? outside.instruction : "";
      $("level-source").textContent = "";
      $("drill").hidden = !state.drill;
      if (!current) computeLevel();
      return;
    }
    box.setAttribute("data-level", String(state.level));
    $("level-num").textContent = state.level ? String(state.level) : "–";
    $("level-name").textContent = levelTitle(state.level, a);
    $("level-action").textContent = levelWords(state.level, a)[1];
    let src = t("noAlert");
    if (a && a.condition !== "official_information") {
      const orderName = LEVEL[state.lang][a.level][0];
      // the municipality by its name (English readers: its English name, else its Japanese one), never its bare code
      // (found: "(079995, …)" for the drill town when its row had no English name)
      const place = (state.lang === "en" && a.municipality_name_en) || a.municipality_name || t("unknownArea");
      // a station as English readers know it (name_en), as the API's own texts name it (alerting/level.py)
      const station = (state.lang === "en" && a.station_name_en) || stationName(a.station_id, a.station_name);
      if (a.condition === "evacuation_order") {
        src = t(a.area ? "fromOrderArea" : "fromOrder", { name: orderName, place, time: fmtTime(a.raised_at) });
      } else if (a.condition === "river_level") {
        src = t("fromGauge", { station, level: a.level });
      } else {
        src = t("fromOther", { station, condition: S.conditionName(a.condition, state.lang) });
      }
    }
    const sources = state.levelSources || [];
    // each source named in the page's language (names: ja-JP, en-US, ja-JP-x-easy, as HAZ)
    const own = a && a.condition !== "official_information";
    if (sources.length) {
      src = (own ? src + " " : "") + t("sources", {
        names: sources.map((x) => (x.names ? Object.values(x.names)[li(state.lang)] : x.name) || x.name).join(" / "),
      });
    }
    $("level-source").textContent = src;
    $("drill").hidden = !state.drill;
  }

  // -- the route ----------------------------------------------------------------------------------------
  function routeSig(f) {
    const p = f.properties;
    const c = f.geometry ? f.geometry.coordinates : [];
    return [p.status, p.shelter ? p.shelter.id : "", c.length, c.length ? c[Math.floor(c.length / 2)].join(",") : ""].join("|");
  }

  /* what the route is asked for besides the place, profile and language: the hazard (or the hazards in force, the
   * resident's choice first) and real or drill; the last one asked is state.routeAsked */
  function routeAsks() {
    return ((!state.hazardChosen && state.routeHazard) || state.hazard) + "|" + String(state.drill);
  }

  async function loadRoute(reason) {
    if (!state.pos) return;
    // refused as busy: the one retry asks again (pending, with what is current when it goes, or on its way);
    // live events do not each ask a server that said it cannot answer yet, they only update the notice (the
    // route shown may be older than the hazard state now)
    if (reason === "live" && state.routeBusy) { renderBusy(); return; }
    clearTimeout(routeRetry);  // this request replaces the pending retry (refused again, it schedules one)
    routeRetry = null;
    const seq = ++state.seq;
    if (!state.route) $("guidance").textContent = t("loading");
    const q = new URLSearchParams({
      lat: state.pos.lat.toFixed(4), lon: state.pos.lon.toFixed(4), hazard: (!state.hazardChosen && state.routeHazard) || state.hazard,
      profile: state.profile, lang: state.lang, exercise: String(state.drill),
    });
    state.routeAsked = routeAsks();
    let f;
    try {
      f = await getJSON("/api/v1/route?" + q.toString());
    } catch (err) {
      if (seq !== state.seq) return;
      if (refusedForNow(err)) { routeBusy(err, reason); return; }
      clearRouteBusy();
      failed(err, true);  // (503 also when routing is not configured: the level and alerts tell an outage)
      // the route shown stays while the connection is lost: an old route beats none (marked stale above)
      if (state.stale && state.route && err.status !== 422) return;
      state.route = null;
      state.routeSig = "";
      renderRoute(err.status === 422 ? t("outside") : t("routeError"));
      return;
    }
    if (seq !== state.seq) return;
    const busy = state.routeBusy;
    clearRouteBusy();
    // a retry of a refused live update is one: a changed route is announced as such
    if (reason === "retry" && busy && busy.live) reason = "live";
    // a drill learnt of while this real-mode answer was on its way (computeLevel): ask again in drill mode
    if (state.drill && q.get("exercise") !== "true") { loadRoute(reason); return; }
    const sig = routeSig(f);
    const changed = state.routeSig && sig !== state.routeSig;
    state.route = f;
    state.routeSig = sig;
    state.routeLang = q.get("lang");
    if (f.properties.hazard_version != null) state.hazardVersion = f.properties.hazard_version;
    if (f.properties.exercise && !state.drill) { state.drill = true; $("drill").hidden = false; }
    renderRoute();
    if (changed && reason === "live") notice(() => t("routeChanged"));
  }

  /* Busy: the server refused to answer this route now (refusedForNow). That is no error of the route: the
   * route shown stays (marked when the hazard state changed since it was computed), #route-busy says the server
   * is busy and that the page will try again, and one retry is made after Retry-After (at least 1 s, at most
   * RETRY_MAX_S, a little later at random so that pages told the same wait do not all come back at once);
   * its answer clears the notice. */
  let routeRetry = null;

  /* the server cannot answer now, and says to come back: any 429, whichever per-client limit refused (the route
   * budget's route_busy, evac/coldfields.py, or the general rate limit of every request, api/ratelimit.py: found,
   * its 429, which names no status_code, dropped the route as "could not be found" with no retry, for everyone
   * behind one address, a shelter's Wi-Fi or a carrier's NAT), or a 503 with Retry-After (the server's route
   * budget, the road network still loading, the database unreachable: api/edge.py). A 503 without it (no routing
   * on this server) is an error. */
  function refusedForNow(err) {
    return err.status === 429 || (err.status === 503 && (!!err.retryAfter
      || (!!err.problem && err.problem.status_code === "route_busy")));
  }

  function retryAfterS(value) {
    const text = String(value || "").trim();
    let s = /^\d+$/.test(text) ? Number(text) : (Date.parse(text) - Date.now()) / 1000;  // seconds, or an HTTP date
    if (!(s >= 1)) s = text ? 1 : RETRY_DEFAULT_S;
    return Math.min(RETRY_MAX_S, s);
  }

  /* a read the server did not answer (getJSON's error), to be asked again later: a refusal for now, any other 5xx,
   * no network; any other 4xx is an answer (what was asked is refused as such) */
  function askAgain(err) {
    return !err.status || refusedForNow(err) || err.status >= 500;
  }

  /* when to ask again a read not answered (ms; tries: 1 for its first retry, 2, …): after its Retry-After (1 s to
   * RETRY_MAX_S; none: RETRY_DEFAULT_S), never sooner than a backoff doubling from 1 s with each try (a page left
   * open keeps asking at a modest pace, at most RETRY_MAX_S apart), a little later at random so that pages told the
   * same wait do not all come back at once */
  function retryDelayMs(err, tries) {
    const s = Math.max(retryAfterS(err.retryAfter), 2 ** Math.min(6, Math.max(0, (tries || 1) - 1)));
    return Math.min(RETRY_MAX_S, s * (1 + 0.2 * Math.random())) * 1000;
  }

  function routeBusy(err, reason) {
    const s = retryAfterS(err.retryAfter);
    const delay = Math.min(RETRY_MAX_S, s * (1 + 0.2 * Math.random())) * 1000;
    const before = state.routeBusy;
    const now = Date.now();
    state.routeBusy = { since: before ? before.since : now, retryAt: now + delay, retryAfterS: s,
      live: reason === "live" || !!(before && before.live) };
    clearTimeout(routeRetry);
    routeRetry = setTimeout(() => { routeRetry = null; loadRoute("retry"); }, delay);
    if (!state.route) $("guidance").textContent = t("loading");  // (asked again by itself: still on its way)
    renderBusy();
  }

  function clearRouteBusy() {
    clearTimeout(routeRetry);
    routeRetry = null;
    if (!state.routeBusy) return;
    state.routeBusy = null;
    renderBusy();
  }

  /* the route shown was computed before the hazard state the server now reports */
  function routeOutdated() {
    const at = state.route && Date.parse(state.route.properties.hazard_changed_at);
    const now = state.hazardsChangedAt && Date.parse(state.hazardsChangedAt);
    return !!(at && now && now > at);
  }

  function renderBusy() {
    const box = $("route-busy");
    const card = $("route-card");
    if (!state.routeBusy) {
      box.hidden = true;
      box.textContent = "";
      card.removeAttribute("data-busy");
      return;
    }
    const outdated = routeOutdated();
    box.textContent = [t(state.route ? "busyKept" : "busyNone"), outdated ? t("busyOutdated") : "", t("busyRetry")]
      .filter(Boolean).join(" ");
    box.hidden = false;
    card.setAttribute("data-busy", !state.route ? "none" : outdated ? "outdated" : "kept");
  }

  function renderRoute(error) {
    const g = $("guidance");
    const f = state.route;
    const details = $("route-details");
    if (!f) {
      g.textContent = error || t("routeNone");
      g.classList.toggle("bad", !!error);
      details.hidden = true;
      drawMap(false);
      return;
    }
    const p = f.properties;
    // the route's own texts (guidance, steps) are the server's, in the one language asked (routeLang): after a
    // change of language they are shown only once the route is answered in the new one (found: refused as busy,
    // the kept route went on showing them in the old language); until then the page says they follow
    const own = state.routeLang === state.lang;
    g.textContent = own ? p.guidance || "" : t("routeOtherLang");
    const avoids = $("route-avoids");
    if (avoids) {
      const hz = p.hazard || state.hazard;
      avoids.hidden = !(p.status === "ok" && hz);
      avoids.textContent = hz ? t("routeAvoids", { hazard: hazName(hz) })
        + (String(hz).includes(",") ? " " + t("ratedAll", { hazard: hazName(hz) }) : "") : "";
    }
    g.classList.toggle("bad", p.status !== "ok" && p.status !== "at_shelter");  // at_shelter: the resident is there
    if (p.status === "ok" && p.shelter) {
      const s = p.shelter;
      details.hidden = false;
      $("shelter-name").textContent = s.name + (s.is_full ? t("shelterFull") : "");
      $("shelter-address").textContent = s.address || "";
      $("shelter-hazards").textContent = listJoin((s.hazards || []).map((h) => (HAZ[h] || [h])[li(state.lang)]));
      $("route-distance").textContent = fmtDistance(p.distance_m);
      $("route-duration").textContent = t("minutes", { m: Math.max(1, Math.ceil((p.duration_s || 0) / 60)) });
      const ol = $("steps");
      ol.textContent = "";
      ol.hidden = $("steps-h").hidden = !own;
      for (const st of own ? p.steps || [] : []) {
        const item = document.createElement("li");
        item.textContent = st.text;
        ol.appendChild(item);
      }
    } else {
      details.hidden = true;
    }
    drawMap(true);
  }

  // -- the map ----------------------------------------------------------------------------------------
  let map = null;

  function drawMap(fit) {
    if (!map) return;
    const f = state.route;
    const target = f && f.properties.shelter ? f.properties.shelter.id : null;
    const areas = state.hazards.filter((h) => state.drill || !h.properties.exercise)
      .map((h) => {
        // the area's own label is the municipality's Japanese text: in English, the hazard's name instead
        const kind = (HAZ[h.properties.hazard] || [h.properties.hazard, h.properties.hazard, h.properties.hazard])[li(state.lang)];
        return { geometry: h.geometry, cls: "hazard", title: state.lang === "en" ? kind : h.properties.label || kind };
      });
    for (const a of state.alerts) {
      if (a.active && a.area && a.condition === "evacuation_order" && (state.drill || !a.exercise)) {
        areas.push({ geometry: a.area, cls: "order-area", title: LEVEL[state.lang][a.level][0] });
      }
    }
    map.setLayer("areas", areas);
    const route = [];
    if (f && f.geometry && f.geometry.coordinates.length) {
      route.push({ geometry: f.geometry, cls: "route-casing" }, { geometry: f.geometry, cls: "route", id: "route-line" });
      // the route starts at the road the position snapped to: a dotted line joins it to the pin (drawn here
      // only, from the position this page already has)
      if (state.pos) {
        route.push({ geometry: { type: "LineString", coordinates: [[state.pos.lon, state.pos.lat], f.geometry.coordinates[0]] },
          cls: "route-access", id: "route-access" });
      }
    }
    map.setLayer("route", route);
    const shown = state.shelters.filter((s) => s.id !== target);
    const points = shown.map((s) => ({
      point: [s.lon, s.lat], r: 6, id: s.id, cls: s.is_open ? "shelter" : "shelter-closed", title: s.name,
    }));
    if (target) {
      const s = f.properties.shelter;
      points.push({ point: [s.lon, s.lat], r: 11, id: s.id, cls: "shelter-target", title: s.name, label: s.name, labelPriority: 10 });
    }
    map.setLayer("points", points);
    map.setLayer("me", state.pos ? [{ point: [state.pos.lon, state.pos.lat], shape: "pin", cls: "me", title: t("legendMe") }] : []);
    $("map-desc").textContent = target ? t("mapTitle", { shelter: f.properties.shelter.name }) : t("mapTitleNone");
    if (fit) fitView();
  }

  function fitView() {
    if (!map) return;
    const f = state.route;
    const pts = [];
    if (state.pos) pts.push([state.pos.lon, state.pos.lat]);
    if (f && f.geometry) pts.push(...f.geometry.coordinates);
    if (f && f.properties.shelter) pts.push([f.properties.shelter.lon, f.properties.shelter.lat]);
    if (pts.length) map.setView(S.boundsOf(pts), 0.12);
    else if (state.info && state.info.service_area) map.setView(state.info.service_area, 0);
  }

  // -- position -----------------------------------------------------------------------------------------
  function setPos(p, source, names) {
    clearRouteBusy();  // a new place: a retry for the last one is no longer wanted
    state.pos = { lat: p.lat, lon: p.lon };
    state.posSource = source;
    state.posNames = names || null;  // a landmark's names (setPos(…, "landmark", names))
    state.routeSig = "";
    state.route = null;
    renderWhere();
    if (source !== "landmark") $("landmark").value = "";
    if (!inService(state.pos)) {
      renderRoute(t("outside"));
      computeLevel();
      return;
    }
    computeLevel();
    drawMap(false);
    loadRoute("user");
  }

  function locate() {
    if (!navigator.geolocation) { $("where-status").textContent = t("locateFailed"); return; }
    $("where-status").textContent = t("locating");
    navigator.geolocation.getCurrentPosition(
      (pos) => setPos({ lat: pos.coords.latitude, lon: pos.coords.longitude }, "gps"),
      () => { $("where-status").textContent = t("locateFailed"); },
      { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  }

  /* text(): the notice in the current language, kept so that a change of language rewrites it too */
  let noticeText = null;
  function notice(text) {
    noticeText = text;
    renderNotice();
  }

  function renderNotice() {
    if (!noticeText) return;
    const s = noticeText();
    $("notice").textContent = s;
    state.lastNotice = s;
  }

  // -- live ---------------------------------------------------------------------------------------------
  async function loadAlerts() {
    try {
      state.alerts = (await getJSON("/api/v1/alerts")).alerts || [];
      markFresh("alertsAt");
    } catch (err) { failed(err); /* keep what we had, marked as out of date */ }
  }

  /* the hazard areas in force; a read not answered keeps the areas drawn, and the next one answered draws its
   * own (found: refused after an event while the route was answered, the route took the new hazards' version,
   * so no poll saw a change, and the map kept the old areas until the next event) */
  let hazardsMissed = false;
  async function loadHazards() {
    try {
      const d = await getJSON("/api/v1/hazards");
      state.hazards = d.features || [];
      if (d.changed_at) state.hazardsChangedAt = d.changed_at;
      if (hazardsMissed) { hazardsMissed = false; drawMap(false); }
      return d.hazard_version;
    } catch (err) { hazardsMissed = true; failed(err, true); return null; }  // (503 also when routing is not configured)
  }

  let pending = null;
  function refreshSoon(what) {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      await Promise.all([loadAlerts(), loadHazards()]);
      const level = computeLevel();
      if (state.stale) await level;  // retrying: the route is asked again only once the level answers
      // (while the server cannot answer, the route shown stays, marked with the level as out of date)
      if (state.stale) drawMap(false);
      else if (state.pos && inService(state.pos)) await loadRoute("live");
      else drawMap(false);
    }, 250);
  }

  /* The event stream. EventSource opens it again by itself after a connection lost, but gives up for good on an
   * answer other than 200 (found: a 429, the server's bound of open streams per address, which the pages behind a
   * shelter's Wi-Fi exceed, or a 503, left the page on its poll alone for the whole session). Closed so, it is
   * opened again after a while (retryDelayMs: the 30 s the server asks for, as EventSource cannot read Retry-After,
   * up to a minute after more tries), and once open everything is read again (events may have been missed). */
  const STREAM_RETRY_AFTER = "30";
  function connect(again) {
    if (!window.EventSource) return;
    const es = new EventSource("/api/v1/events");
    es.addEventListener("alert", () => refreshSoon({ alerts: true }));
    es.addEventListener("hazard_state", () => refreshSoon({ alerts: false }));
    es.addEventListener("official", () => refreshSoon({ alerts: false }));
    es.addEventListener("route", () => refreshSoon({ alerts: false }));
    // the stream broke (network, server restart): events may have been missed; when it is back, read all again
    let broken = !!again;
    es.addEventListener("error", () => {
      broken = true;
      if (navigator.onLine === false) markStale("offline");
      if (es.readyState !== EventSource.CLOSED) return;  // (reconnecting by itself)
      es.close();
      const before = state.streamRefused;
      const tries = before ? before.tries + 1 : 1;
      const delay = retryDelayMs({ retryAfter: STREAM_RETRY_AFTER }, tries);
      const now = Date.now();
      state.streamRefused = { since: before ? before.since : now, retryAt: now + delay, tries };
      setTimeout(() => connect(true), delay);
    });
    es.addEventListener("open", () => {
      state.streamRefused = null;
      if (broken) { broken = false; refreshSoon({ alerts: true }); }
    });
  }

  async function poll() {
    // retry while out of date; and ask the level again when it is old, whatever the event stream said
    if (state.stale || (state.pos && state.levelAt && Date.now() - state.levelAt > LEVEL_MAX_AGE_MS)) {
      refreshSoon({ alerts: true });
      return;
    }
    const version = await loadHazards();
    if (version != null && state.hazardVersion === null) {
      // the start's read of the hazards was not answered (refused for now): found, then no poll ever compared a
      // version, and the areas it read were not drawn until an event came; now they are, and compared from here
      state.hazardVersion = version;
      drawMap(false);
      return;
    }
    if (version != null && state.hazardVersion !== null && version !== state.hazardVersion) {
      state.hazardVersion = version;
      refreshSoon({ alerts: true });
    }
  }

  // -- notifications (Web Push): only the push address, the chosen area and the language leave the page ----
  const PUSH_LANG = { ja: "ja-JP", en: "en-US", "ja-easy": "ja-JP-x-easy" };
  const PUSH_KEY = "sonae.push";

  function pushSupported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }

  function pushShow(on) {
    $("push-on").hidden = !!on;
    $("push-off").hidden = !on;
  }

  function b64uBytes(text) {
    const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  }

  /* The worker's scope is /static/, not this page's, so navigator.serviceWorker.ready would never
   * resolve here: wait for the registration's own worker to be active. */
  function activated(reg) {
    return new Promise((resolve) => {
      const w = reg.installing || reg.waiting;
      if (reg.active || !w) { resolve(reg); return; }
      w.addEventListener("statechange", () => { if (w.state === "activated") resolve(reg); });
    });
  }

  /* Signing up. Refused for now with a wait to keep (a 429 of the rate limit, a 503, with Retry-After), it says the
   * server is busy and signs up again by itself after it (retryDelayMs; one pending, replaced by a click, dropped
   * by "stop"); found: it said only "Could not sign up. Please try again." A 429 with no wait (this address's bound
   * of subscriptions) or any other failure is a failure: try again. */
  let pushRetry = null;
  async function pushOn(tries) {
    clearTimeout(pushRetry);
    pushRetry = null;
    const status = $("push-status");
    if (!pushSupported()) { status.textContent = t("pushUnsupported"); return; }
    if (!state.pos) { status.textContent = t("pushNeedPlace"); return; }
    const choice = $("push-area").value;
    const drills = $("push-drills").checked;
    let areas;
    if (choice === "municipality") {
      const near = nearestShelter(state.pos);
      const code = state.municipality || (near && near.municipality_code);
      // in the drill town the position is in it too for drills (alerting/drilltown.py): its whole-town drill
      // orders reach a subscriber taking drills; without drills it is no place of theirs (the server refuses it)
      const drillTown = drills ? state.exerciseMunicipality : null;
      if (!code && !drillTown) { status.textContent = t("pushNeedPlace"); return; }
      areas = [code, drillTown].filter((c, i, all) => c && all.indexOf(c) === i).map((c) => ({ municipality_code: c }));
    } else {
      // rounded here already: the server keeps no more than ~100 m either
      areas = [{ lat: Math.round(state.pos.lat * 1000) / 1000, lon: Math.round(state.pos.lon * 1000) / 1000, radius_m: Number(choice) }];
    }
    status.textContent = t("pushWorking");
    try {
      if ((await Notification.requestPermission()) !== "granted") { status.textContent = t("pushDenied"); return; }
      const reg = await activated(await navigator.serviceWorker.register("/static/sw.js"));
      const key = (await getJSON("/api/v1/push/vapid-public-key")).public_key;
      let sub = await reg.pushManager.getSubscription();
      if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64uBytes(key) });
      const made = await getJSON("/api/v1/push/subscriptions", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ subscription: sub.toJSON(), areas, lang: PUSH_LANG[state.lang], drills }),
      });
      localStorage.setItem(PUSH_KEY, JSON.stringify({ id: made.id, token: made.unsubscribe_token }));
      status.textContent = t("pushDone");
      pushShow(true);
    } catch (err) {
      if (err.status && err.retryAfter && refusedForNow(err)) {
        const n = (tries || 0) + 1;
        status.textContent = t("pushBusy");
        pushRetry = setTimeout(() => { pushRetry = null; pushOn(n); }, retryDelayMs(err, n));
        return;
      }
      status.textContent = t("pushFailed");
    }
  }

  async function pushOff() {
    clearTimeout(pushRetry);  // (a sign-up waiting to be tried again is not wanted any more)
    pushRetry = null;
    const saved = JSON.parse(localStorage.getItem(PUSH_KEY) || "null");
    try {
      if (saved) {
        await fetch("/api/v1/push/subscriptions/" + saved.id, { method: "DELETE", headers: { "X-Unsubscribe-Token": saved.token } });
      }
      const reg = pushSupported() ? await navigator.serviceWorker.getRegistration("/static/") : null;
      const sub = reg ? await reg.pushManager.getSubscription() : null;
      if (sub) await sub.unsubscribe();
    } catch (err) { /* the server forgets expired subscriptions by itself */ }
    localStorage.removeItem(PUSH_KEY);
    $("push-status").textContent = t("pushStopped");
    pushShow(false);
  }

  function pushStart() {
    $("push-on").addEventListener("click", () => pushOn(0));
    $("push-off").addEventListener("click", pushOff);
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(PUSH_KEY) || "null"); } catch (err) { saved = null; }
    pushShow(!!saved);
    if (!pushSupported()) $("push-status").textContent = t("pushUnsupported");
  }

  // -- start --------------------------------------------------------------------------------------------
  /* The reads done once at start: the service (the area routes are answered for, and the hazards: without it the
   * map has no area to show, so no view, no shelters, no roads to tap on) and the river gauges' registry (their
   * names in the level's sources, the landmark search). Found: one the server did not answer (a 429 of the rate
   * limit behind a busy address, a 503) was taken as an empty answer, and the page went on without it, silently,
   * for the whole session. Each is now asked again until answered (askAgain; retryDelayMs: after Retry-After, 1 s
   * to 60 s, never sooner than a backoff doubling up to a minute: a page left open asks at a modest pace),
   * #start-busy says what is missing and that the page tries again, and an answer is put to use at once
   * (startAnswered), with no reload. Another 4xx is an answer: nothing there.
   * An answer may be one for now only (the third of its entry says when): the service while the road network is
   * still loading answers the hazards but no area yet, with ``loading`` and Retry-After (api/evacuation.py). Found:
   * that null area was taken as the answer, so a page opened while the server started never showed the area,
   * for the whole session. What it has is put to use, and it is asked again like a read not answered, until the
   * area comes. */
  const START_READS = {
    info: ["/api/v1/service", (d) => { state.info = d || {}; }, (d) => !!d && d.loading === true && !d.service_area],
    stations: ["/api/v1/stations", (d) => { state.stations = (d && d.stations) || []; }, null],
  };

  /* read ``name`` of START_READS (tries: 0 at start, then 1, 2, … for its retries); true once answered */
  async function startRead(name, tries) {
    const [url, use, forNow] = START_READS[name];
    let body = null;
    try {
      const meta = {};
      body = await getJSON(url, undefined, meta);
      if (forNow && forNow(body)) {
        use(body);  // (what it has, e.g. the hazards offered)
        const err = new Error("not complete yet");
        err.retryAfter = meta.retryAfter;
        err.forNow = true;
        throw err;
      }
    } catch (err) {
      if (err.forNow || askAgain(err)) {
        const delay = retryDelayMs(err, tries + 1);
        const now = Date.now();
        const before = state.startPending[name];
        state.startPending[name] = { since: before ? before.since : now, retryAt: now + delay, tries: tries + 1,
          busy: refusedForNow(err), loading: !!err.forNow };
        setTimeout(async () => { if (await startRead(name, tries + 1)) startAnswered(name); }, delay);
        renderStartBusy();
        return false;
      }
    }
    delete state.startPending[name];
    use(body);
    renderStartBusy();
    return true;
  }

  /* a read of start answered on a retry: what it is for, at once */
  function startAnswered(name) {
    if (name === "info") {
      applyTexts();  // (the hazards offered)
      if (!map.view) fitView();  // the service area shown (unless a place is shown already)
      drawMap(false);
    } else {
      renderLevel();  // the gauges by their names in the page's language
      const busy = state.pickBusy;
      if (busy && busy.retryAt === null && $("landmark").value.trim() === busy.text) runSearch();
    }
  }

  function renderStartBusy() {
    const box = $("start-busy");
    if (!box) return;
    const missing = Object.keys(state.startPending);
    if (!missing.length) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    const busy = missing.some((k) => state.startPending[k].busy);
    const loading = missing.every((k) => state.startPending[k].loading);  // (answered for now only: being prepared)
    const what = listJoin(missing.map((k) => t(k === "info" ? "startInfo" : "startStations")));
    box.textContent = [t(busy ? "startBusy" : loading ? "startLoading" : "startFailed", { what }), t("startRetry")].join(" ");
    box.hidden = false;
  }

  async function start() {
    const asked = new URLSearchParams(location.search).get("lang");
    // else the language the server chose from Accept-Language (api/language.py, as for every API answer)
    const served = document.documentElement.getAttribute("data-lang");
    state.lang = LANGS.includes(asked) ? asked : LANGS.includes(served) ? served : "ja";
    applyTexts();
    map = new S.SvgMap($("map-svg"), {
      aspect: 0.75, roads: S.roadCells(0.01, 16), onTap: (p) => setPos(p, "map"), onView: sheltersForView,
    });
    S.keyboard($("map"), map, (p) => setPos(p, "map"));
    window.sonaeMap = map; // for tests
    for (const b of document.querySelectorAll(".langs button")) {
      b.addEventListener("click", () => {
        state.lang = b.getAttribute("data-lang");
        const u = new URL(location.href);
        u.searchParams.set("lang", state.lang);
        history.replaceState(null, "", u.pathname + u.search);
        applyTexts();
        renderLevel();
        renderBusy();
        if (state.route) renderRoute();
        else drawMap(false);
        // outside the area routes are answered for, no route is asked (its 422), only the text rewritten
        if (state.pos && !inService(state.pos)) renderRoute(t("outside"));
        else loadRoute("lang");
      });
    }
    $("locate").addEventListener("click", locate);
    $("landmark").addEventListener("input", searchLandmarks);
    $("landmark").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(pickTimer); runSearch(); }
    });
    $("hazard").addEventListener("change", (ev) => { state.hazard = ev.target.value; state.hazardChosen = true; loadRoute("user"); });
    $("profile").addEventListener("change", (ev) => { state.profile = ev.target.value; loadRoute("user"); });
    $("zoom-in").addEventListener("click", () => map.zoom(1.5));
    $("zoom-out").addEventListener("click", () => map.zoom(1 / 1.5));
    $("zoom-fit").addEventListener("click", fitView);
    pushStart();
    $("print").addEventListener("click", () => { $("print-time").textContent = t("printed", { time: fmtTime(null, true) }); window.print(); });

    // the area routes are answered for (the road network's extent; outside it the route query answers 422) and the
    // gauges; each asked again until answered (startRead)
    await Promise.all([
      startRead("info", 0), startRead("stations", 0),
      loadAlerts(), loadHazards().then((v) => { if (v != null) state.hazardVersion = v; }),
    ]);
    applyTexts();
    fitView();
    drawMap(false);
    connect();
    setInterval(poll, POLL_MS);
    window.addEventListener("offline", () => markStale("offline"));
    window.addEventListener("online", () => refreshSoon({ alerts: true }));
    document.body.setAttribute("data-ready", "true");
    if (navigator.permissions && navigator.geolocation) {
      try {
        const perm = await navigator.permissions.query({ name: "geolocation" });
        if (perm.state === "granted" && !state.pos) locate();
      } catch (err) { /* not supported: the button is there */ }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
